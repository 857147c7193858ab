"""The offline demo: its pretrained bases load like the published notop files, and a short run writes results."""
import json

import numpy as np
import pytest

from minitl import demo, io
from minitl.applications import get_backbone
from minitl.runs import read_record


@pytest.mark.parametrize("arch, first, count", [("vgg16", ["block1_conv1", "block1_conv2"], 13),
                                                ("mobilenet_v2", ["Conv1", "bn_Conv1"], 104)])
def test_shipped_base_loads_through_the_keras_loader(arch, first, count):
    path = demo.demo_weights_path(arch)
    assert path.is_file(), f"weights/{demo.DEMO_BASES[arch].file} is part of the project"
    entries = io.read_keras_weights(path)
    assert [e.name for e in entries][:2] == first and len(entries) == count
    backbone = get_backbone(arch)
    width = {backbone.WIDTH_ARGUMENT: demo.DEMO_BASES[arch].width}
    base = backbone(include_top=False, input_shape=(32, 32, 3), **width)
    report = io.load_weights(base, path)
    assert len(report.loaded) == count and not report.untouched


def test_images_become_preprocessed_32x32_rgb():
    white = np.full((2, 28, 28), 255, np.uint8)
    x = demo.to_input(white, "caffe")
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0, 0], -np.float32([103.939, 116.779, 123.68]), rtol=1e-6)
    np.testing.assert_allclose(x[0, 16, 16], 255 - np.float32([103.939, 116.779, 123.68]), rtol=1e-6)
    x = demo.to_input(white, "tf")
    assert x.dtype == np.float32 and x[0, 0, 0].tolist() == [-1, -1, -1] and x[0, 16, 16].tolist() == [1, 1, 1]


def test_each_demo_base_names_its_arch_s_preprocessing():
    assert {a: b.preprocessing for a, b in demo.DEMO_BASES.items()} == {"vgg16": "caffe", "mobilenet_v2": "tf"}
    with pytest.raises(ValueError, match="the demo runs on vgg16, mobilenet_v2, not 'resnet50'"):
        demo.demo_base("resnet50")


@pytest.mark.parametrize("arch", ["vgg16", "mobilenet_v2"])
def test_short_demo_run_writes_results_and_samples(tmp_path, arch):
    lines = []
    results = demo.run(out=tmp_path / "demo", arch=arch, train_per_class=3, epochs=1,
                       recipe=demo.Recipe(finetune_epochs=1), progress=False, log=lines.append)
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["arch"] == arch
    for name in ("scratch", "frozen", "finetuned"):
        assert 0 <= saved[name]["accuracy"] <= 1 and 0 <= saved[name]["macro_f1"] <= 1
        assert saved[name] == results[name]
        assert (tmp_path / "demo" / name / "checkpoint.h5").is_file()
        record = read_record(tmp_path / "demo" / name)
        assert record["model"]["arch"] == arch and record["preprocessing"] == demo.DEMO_BASES[arch].preprocessing
    samples = sorted((tmp_path / "demo" / "samples").glob("*/*.png"))
    assert len(samples) == 20
    text = "\n".join(lines)
    assert "minitl predict" in text and f"minitl finetune --arch {arch} --data" in text and "scratch" in text
    assert f"minitl weights fetch {arch}-notop" in text


def test_flip_and_shift_moves_the_silhouette_inside_its_border_without_wrapping_it():
    x = demo.to_input(np.random.default_rng(0).integers(1, 256, (1, 28, 28)).astype(np.uint8), "caffe")[0]
    seen = set()
    for i in range(20):
        y = demo.flip_and_shift(x, np.random.default_rng(i))
        rng = np.random.default_rng(i)  # the same draws: the flip, then the shift
        flip, (dy, dx) = rng.random() < 0.5, rng.integers(-2, 3, size=2)
        expected = np.broadcast_to(x[0, 0], x.shape).copy()  # the background of the border
        expected[2 + dy:30 + dy, 2 + dx:30 + dx] = (x[:, ::-1] if flip else x)[2:30, 2:30]
        np.testing.assert_array_equal(y, expected)
        seen.add(y.tobytes())
    assert len(seen) > 5  # flips and shifts vary


def test_the_demo_seed_and_lr_find_from_the_command_line(tmp_path, capsys):
    from minitl.cli import main
    assert main(["demo", "--lr-find", "--out", str(tmp_path / "lr"), "--quiet", "--seed", "1"]) == 0
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    out = capsys.readouterr().out
    assert f"suggested {saved['minimum']:.2g} (the minimum's rate / 10" in out and "recipe uses 0.003" in out
    assert 10 <= len(saved["lrs"]) <= 100 and saved["lrs"][0] == pytest.approx(1e-7)
    results = demo.run(out=tmp_path / "d", train_per_class=3, seed=1, recipe=demo.Recipe(frozen_epochs=1,
                       finetune_epochs=1), progress=False, log=lambda *a: None, scratch=False)
    assert set(results) == {"frozen", "finetuned"}
    saved = json.loads((tmp_path / "d" / "results.json").read_text())
    assert saved["seed"] == 1 and saved["recipe"]["frozen_epochs"] == 1
    assert 0 <= saved["finetuned"]["val_accuracy"] <= 1 and saved["finetuned"]["seconds"] > 0
