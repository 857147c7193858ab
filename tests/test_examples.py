"""Every example runs with --quick and prints (or writes) what it promises."""
import copy
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minitl
import minitl.nn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
COVERED = [
    "00_seed_recipe",
    "01_autograd_by_hand",
    "02_gradcheck",
    "03_conv_as_matmul",
    "04_softmax_cross_entropy",
    "05_sgd",
    "06_vgg16_weights",
    "07_transfer_learning",
    "08_gradcam",
    "09_winograd",
    "10_dask_onnx_predict",
]


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    """run(name, *args) -> (main's return value, printed text); in tmp_path, the weight RNG left as it was."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(minitl.nn, "_rng", copy.deepcopy(minitl.nn._rng))

    def run_example(name, *args):
        spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        capsys.readouterr()
        result = module.main(["--quick", *map(str, args)])
        return result, capsys.readouterr().out

    return run_example


def assert_png(path, size=None):
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        if size is not None:
            assert img.size == size


def test_every_example_is_tested():
    assert sorted(p.stem for p in EXAMPLES.glob("[0-9][0-9]_*.py")) == COVERED


def test_00_seed_recipe(run):
    report, out = run("00_seed_recipe")
    assert "epoch 1/1" in out and "confusion matrix" in out
    acc, f1, n = re.search(r"test accuracy (\S+), macro F1 (\S+) \((\d+) images\)", out).groups()
    assert int(n) == 20 and float(acc) in {i / 20 for i in range(21)} and 0 <= float(f1) <= 1
    assert report["accuracy"] == pytest.approx(float(acc), abs=5e-4)


def test_01_autograd_by_hand(run, tmp_path):
    _, out = run("01_autograd_by_hand", "--dot", tmp_path / "graph.dot")
    assert float(re.search(r"max \|dL/dW by hand - minitl\| = (\S+)", out).group(1)) < 1e-10
    err = float(re.search(r"max relative error = (\S+)", out).group(1))
    assert err < 1e-6
    dot = (tmp_path / "graph.dot").read_text()
    assert dot.startswith("digraph") and "MatMul" in dot and "W\\n(3, 2) float64" in dot
    assert "graph drawn in" in out or "apt-get install graphviz" in out


def test_02_gradcheck_table(run):
    code, out = run("02_gradcheck")
    assert code == 0
    ops = {cls.__name__ for cls in minitl.check.minitl_ops().values()}
    rows = {line.split()[0]: line for line in out.splitlines() if line.rstrip().endswith(("PASS", "FAIL"))}
    assert set(rows) == ops
    assert all(line.rstrip().endswith("PASS") for line in rows.values())
    assert all(float(line.split()[-2]) < 1e-6 for line in rows.values())
    assert "without a case in op_cases(): none" in out


def test_03_conv_as_matmul(run):
    _, out = run("03_conv_as_matmul")
    assert "loops == cols @ W_mat + b: True" in out and "loops == minitl.functional.conv2d: True" in out
    assert "dW = colsᵀ @ gY equals the loops: True" in out
    assert "dX True   dW True   dbias True" in out
    assert "shape (9, 9)" in out  # the im2col matrix of a 3×3 kernel over a 5×5 image


def test_04_softmax_cross_entropy(run):
    _, out = run("04_softmax_cross_entropy")
    by_hand, ours = re.search(r"L by hand (\S+)\s+minitl (\S+)", out).groups()
    assert by_hand == ours
    assert float(re.search(r"by hand − minitl's backward\| = (\S+)", out).group(1)) < 1e-12
    assert "naive loss   nan" in out
    assert "minitl loss  0.656631, gradient finite: True" in out


def test_05_sgd(run, tmp_path):
    _, out = run("05_sgd", "--out", tmp_path / "paths.png")
    rows = [line for line in out.splitlines() if line.startswith(("plain", "momentum", "Nesterov", "Adam"))]
    table = {line[:30].strip(): line[30:].split() for line in rows}
    assert table["plain, η=0.042 (> 2/κ = 0.04)"][-1] == "diverged"
    assert table["Adam, η=0.2"][-1] != "diverged" and float(table["Adam, η=0.2"][0]) < 44 / 10  # L(W_0) = 44
    assert float(table["Nesterov 0.8, η=0.025"][0]) < float(table["plain, η=0.025"][0])
    hand, ours = re.search(r"W_1 = W_0 − η∇L\(W_0\) = (\(.*?\)) by hand, (\(.*?\)) by minitl", out).groups()
    assert hand == ours == "(-3.9, -0.3)"
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in out
    else:
        assert_png(tmp_path / "paths.png")


def test_06_vgg16_weights(run, tmp_path):
    _, out = run("06_vgg16_weights")
    assert "Total params:" in out and "block5_conv3" in out
    assert "16 layers loaded" in out and "every array equal after the round trip: True" in out
    assert "block1_conv1: kernel (3, 3, 3, 4)" in out
    from minitl.applications import VGG16
    from minitl.nn import manual_seed

    manual_seed(0)
    first = VGG16(width=1 / 16, input_shape=(32, 32, 3), classes=10).get_layer("block1_conv1").kernel.numpy()[..., 0]
    rows = re.findall(r"\[([^\[\]]+)\]", out.split("first filter")[1].split("\n", 1)[1])
    printed = np.array([row.split() for row in rows], dtype=float).reshape(3, 3, 3)
    np.testing.assert_allclose(printed, first.transpose(2, 0, 1), atol=6e-4)  # one 3×3 slice per channel

    from minitl.applications import VGG16
    from minitl.io import save_weights

    notop = VGG16(include_top=False, width=1 / 8, input_shape=(32, 32, 3))
    save_weights(notop, tmp_path / "notop.h5")
    _, out = run("06_vgg16_weights", "--weights", tmp_path / "notop.h5")
    assert "13 layers loaded" in out and "block1_conv1: kernel (3, 3, 3, 8)" in out
    k = notop.get_layer("block1_conv1").kernel.numpy()
    assert f"mean {k.mean():.4f}, std {k.std():.4f}" in out


def test_07_transfer_learning(run):
    _, out = run("07_transfer_learning")
    assert "layers loaded from" in out or "NOTICE:" in out
    assert "new head: head_flatten" in out
    assert "epoch 1/1" in out and "confusion matrix" in out
    for name in ("frozen", "fine-tuned"):
        acc, f1 = map(float, re.search(rf"^{name}\s+(\S+)\s+(\S+)$", out, re.MULTILINE).groups())
        assert 0 <= f1 <= 1 and acc in {i / 20 for i in range(21)}  # 20 test images


def test_08_gradcam_on_the_synthetic_task(run, tmp_path):
    _, out = run("08_gradcam", "--out", tmp_path / "cam.png")
    assert float(re.search(r"max difference (\S+)", out).group(1)) < 1e-5
    hits = int(re.search(r"coloured square in (\d+) of 64", out).group(1))
    assert hits >= 40
    assert_png(tmp_path / "cam.png", size=(8 * 32 * 4, 2 * 32 * 4))


def test_08_gradcam_of_a_run_folder(run, tmp_path):
    from minitl.demo import DEMO_BASES, TARGET, config
    from minitl.files import write_json
    from minitl.io import save_weights
    from minitl.transfer import build_model

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = config(DEMO_BASES["vgg16"], 5)
    save_weights(build_model(cfg), run_dir / "checkpoint.h5")
    write_json(
        run_dir / "record.json",
        {"model": cfg, "classes": list(TARGET), "image_size": [32, 32], "preprocessing": "caffe"},
    )
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    _, out = run("08_gradcam", "--run", run_dir, "--image", tmp_path / "a.png", "--out", tmp_path / "cam.png")
    assert re.search(r"predicted (elephant|giraffe|horse|sheep|zebra)", out)
    assert "block5_conv3's (2, 2) map" in out
    assert float(re.search(r"max difference (\S+)", out).group(1)) < 1e-5
    assert_png(tmp_path / "cam.png", size=(256, 512))


def test_09_winograd(run):
    code, out = run("09_winograd")
    assert code == 0
    assert float(re.search(r"tile error: (\S+)", out).group(1)) == 0
    rows = {
        m.group(1): m.group(2, 3, 4)
        for m in re.finditer(r"^(im2col \+|Winograd F\(.x., 3x3\)).*?([\d,]+) +(\S+) +(\S+)$", out, re.MULTILINE)
    }
    rows = {k.replace("Winograd ", "").replace("im2col +", "im2col"): v for k, v in rows.items()}
    mults = {k: int(v[0].replace(",", "")) for k, v in rows.items()}
    assert mults["im2col"] == 9 * 16 * 16 * 32 * 32
    assert mults["im2col"] / mults["F(2x2, 3x3)"] == 2.25 and mults["im2col"] / mults["F(4x4, 3x3)"] == 4
    errors = {k: float(v[2]) for k, v in rows.items()}
    assert errors["im2col"] < 1e-5 and errors["F(2x2, 3x3)"] < 1e-5 and errors["F(4x4, 3x3)"] < 1e-4


def test_10_dask_onnx_predict(run):
    """1,000 images on a LocalCluster of 2 workers, each running the exported ONNX model: one CSV,
    the classes of minitl predict."""
    pytest.importorskip("dask.distributed")
    pytest.importorskip("onnxruntime")
    (done, seconds), out = run("10_dask_onnx_predict")
    assert done == 1000 and seconds > 0
    assert "1000 images in" in out and "on 2 workers" in out
    assert "the same class as minitl predict for 1000 of 1000 images" in out
    with open("predictions.csv") as f:
        lines = f.read().splitlines()
    assert lines[0] == "path,class,probability,elephant,giraffe,horse,sheep,zebra" and len(lines) == 1001
    assert len({line.split(",")[0] for line in lines[1:]}) == 1000
