"""minitl export --format onnx: the whole transfer model (base, head, softmax) as an ONNX
graph, run in ONNX Runtime against minitl's own forward pass, at batch 1 and 8; with the
preprocessing inside the graph, on image files read by the script written beside the model."""
import json
import runpy
import sys

import numpy as np
import pytest
from finetune_fixtures import one_error_line
from PIL import Image

from minitl import functional as F
from minitl.applications.backbone import record_graph
from minitl.cli import main
from minitl.data import load_image, open_image, resize_and_crop
from minitl.errors import ShapeError, WeightsError
from minitl.nn import BatchNormalization, Conv2D, Dense, Layer, Module, ReLU, Sequential, manual_seed
from minitl.onnx_export import INPUT, OPSET, OUTPUT, to_onnx
from minitl.runs import BEST
from minitl.tensor import Tensor, no_grad
from minitl.train import predict_on_batch
from minitl.transfer import build_model, load_run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4  # float32: ONNX Runtime against minitl, on probabilities

# (arch, width, input size, pooling, ops the graph must hold): width 1, and the demo's widths
MODELS = [
    ("vgg16", 1.0, 32, "flatten", {"Conv", "Relu", "MaxPool", "Transpose", "Flatten", "Gemm", "Softmax"}),
    ("vgg16", 1 / 8, 32, "flatten", {"Conv", "MaxPool", "Gemm"}),
    ("vgg19", 1.0, 32, "avg", {"Conv", "MaxPool", "GlobalAveragePool", "Gemm"}),
    ("resnet50", 1.0, 32, "flatten", {"Pad", "Conv", "BatchNormalization", "Relu", "MaxPool", "Add"}),
    ("inception_v3", 1.0, 75, "avg", {"Conv", "BatchNormalization", "Concat", "AveragePool", "MaxPool"}),
    ("mobilenet_v2", 1.0, 32, "flatten", {"Conv", "BatchNormalization", "Clip", "Pad", "Add"}),
    ("mobilenet_v2", 0.35, 32, "avg", {"Conv", "Clip", "GlobalAveragePool"}),
]


def session(proto_or_path):
    model = proto_or_path.SerializeToString() if hasattr(proto_or_path, "SerializeToString") else str(proto_or_path)
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def calibrated(arch, width, size, pooling, x):
    """A transfer model whose BatchNormalization layers have the mean of ``x`` at their input
    and twice its variance, and whose logits spread by about 2 around 0, so that its
    probabilities differ from image to image and stay away from 0 and 1. (With the variance
    itself, a deep random network is chaotic: float32 round-off doubles at every ResNet50
    stage, whatever runs it.)"""
    manual_seed(0)
    model = build_model({"arch": arch, "width": width, "input_shape": (size, size, 3), "num_classes": 5,
                         "hidden": (16,), "dropout": 0.5, "pooling": pooling})
    norms = [m for m in model.modules() if isinstance(m, BatchNormalization)]
    for m in norms:
        m.momentum = 0.0  # one training pass sets the moving statistics to the batch's
    with no_grad():
        model.train()
        model(Tensor(x))
        model.eval()
        for m in norms:
            m.moving_variance.data *= 2
        logits = model(Tensor(x)).numpy()
    last, k = model.get_layer("head_predictions"), np.float32(2 / logits.std(axis=0).mean())
    last.kernel.data *= k  # logits' = (logits - their mean over the images) · k
    last.bias.data[:] = (last.bias.data - logits.mean(axis=0)) * k
    return model


@pytest.mark.parametrize("arch, width, size, pooling, ops", MODELS,
                         ids=[f"{m[0]}-{m[1]:g}" for m in MODELS])
def test_onnx_runtime_gives_minitl_s_probabilities(arch, width, size, pooling, ops):
    x = np.random.default_rng(1).uniform(-100, 100, (8, size, size, 3)).astype(np.float32)
    model = calibrated(arch, width, size, pooling, x)
    proto = to_onnx(model, (size, size, 3))
    assert ops <= {node.op_type for node in proto.graph.node}
    assert proto.opset_import[0].version == OPSET >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [size, size, 3]
    run = session(proto)
    with no_grad():
        expected = F.softmax(model(Tensor(x))).numpy()
    assert expected.std(axis=0).max() > 0.05 and expected.max() < 0.999  # a check that can see a wrong graph
    for batch in (x[:1], x):
        got = run.run([OUTPUT], {INPUT: batch})[0]
        assert got.shape == (len(batch), 5)
        assert np.abs(got - expected[:len(batch)]).max() <= TOLERANCE


def test_a_wrong_kernel_layout_is_seen(monkeypatch):
    """The check above fails when the graph is wrong: a convolution kernel left unflipped."""
    x = np.random.default_rng(1).uniform(-100, 100, (8, 32, 32, 3)).astype(np.float32)
    model = calibrated("vgg16", 1 / 8, 32, "flatten", x)
    conv = model.get_layer("block1_conv1")
    conv.kernel.data = conv.kernel.data[::-1].copy()
    proto = to_onnx(model, (32, 32, 3))
    conv.kernel.data = conv.kernel.data[::-1].copy()
    with no_grad():
        expected = F.softmax(model(Tensor(x))).numpy()
    assert np.abs(session(proto).run([OUTPUT], {INPUT: x})[0] - expected).max() > TOLERANCE


# ---- the command on runs: the script beside the model, on image files ----------------
RUNS = {  # arch: (input size, finetune options), the demo's widths and small ones
    "vgg16": (32, ["--width", "0.125"]),
    "vgg19": (32, ["--width", "0.125", "--pooling", "avg"]),
    "resnet50": (32, ["--width", "0.125"]),
    "inception_v3": (75, ["--width", "0.125", "--pooling", "avg"]),
    "mobilenet_v2": (32, ["--width", "0.35", "--dropout", "0.25"]),
}
TINY = ["--hidden", "8", "--freeze-epochs", "1", "--epochs", "1", "--batch-size", "8", "--quiet"]


@pytest.fixture(scope="module", params=list(RUNS))
def exported(request, folder, tmp_path_factory):
    """(run, the model with preprocessing inside and its script, the float model and its script)."""
    arch, tmp = request.param, tmp_path_factory.mktemp(request.param)
    size, options = RUNS[arch]
    assert main(["finetune", "--arch", arch, "--data", str(folder), "--out", str(tmp / "run"), "--image-size",
                 str(size), *options, *TINY]) == 0
    assert main(["export", str(tmp / "run"), "--out", str(tmp / "images.onnx"), "--format", "onnx",
                 "--with-preprocessing"]) == 0
    assert main(["export", str(tmp / "run"), "--out", str(tmp / "floats.onnx"), "--format", "onnx"]) == 0
    return tmp / "run", tmp / "images.onnx", tmp / "images_onnx.py", tmp / "floats.onnx", tmp / "floats_onnx.py"


def image_paths(folder, tmp_path):
    """The folder's readable images (PNG, JPEG, BMP, GIF, WebP; grayscale, RGBA) and a 50x30 one."""
    wide = tmp_path / "wide.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3)).astype(np.uint8)).save(wide)
    return [str(p) for p in sorted(folder.glob("*/*")) if p.name != "broken.jpg"] + [str(wide)]


def minitl_predict(run, paths):
    """What `minitl predict` computes for these files: the last epoch's softmax, batch by batch of 32."""
    model, record = load_run(run)
    x = np.stack([load_image(p, tuple(record["image_size"]), record["preprocessing"]) for p in paths])
    return F.softmax(Tensor(predict_on_batch(model, x))).numpy()


def test_the_script_gives_minitl_predict_s_probabilities_on_image_files(exported, folder, tmp_path, monkeypatch):
    run, model, script, floats, float_script = exported
    paths = image_paths(folder, tmp_path)
    record = json.loads((run / "record.json").read_text())
    expected = minitl_predict(run, paths)
    monkeypatch.setitem(sys.modules, "minitl", None)  # the script runs without minitl: importing it would fail
    with_inside = runpy.run_path(str(script))
    images = with_inside["load_images"](paths)
    size = tuple(record["image_size"])
    assert images.dtype == np.uint8 and images.shape == (len(paths), *size, 3)
    for p, image in zip(paths, images):  # the pixels minitl reads, exactly
        assert np.array_equal(image, resize_and_crop(open_image(p, max(size)), size))
    for i in (0, 8):
        got = with_inside["predict"](images[i:i + 8], str(model))
        assert np.abs(got - expected[i:i + 8]).max() <= TOLERANCE
    one = with_inside["predict"](images[:1], str(model))
    assert np.abs(one - expected[:1]).max() <= TOLERANCE
    outside = runpy.run_path(str(float_script))
    x = outside["load_images"](paths)
    assert x.dtype == np.float32
    assert np.array_equal(x, np.stack([load_image(p, size, record["preprocessing"]) for p in paths]))
    assert np.abs(outside["predict"](x, str(floats)) - expected).max() <= TOLERANCE


def test_the_script_prints_the_top_classes(exported, folder, tmp_path, capsys, monkeypatch):
    script = exported[2]
    path = image_paths(folder, tmp_path)[0]
    monkeypatch.setattr(sys, "argv", [str(script), path])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == path and len(out) == 4
    assert {line.split()[0] for line in out[1:]} == {"blue", "green", "red"}


def test_the_file_passes_onnx_s_checker_and_holds_the_run_s_classes(exported):
    run, model, _, floats, _ = exported
    record = json.loads((run / "record.json").read_text())
    for path, dtype in ((model, onnx.TensorProto.UINT8), (floats, onnx.TensorProto.FLOAT)):
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        assert proto.graph.input[0].type.tensor_type.elem_type == dtype
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["classes"]) == record["classes"] and meta["preprocessing"] == record["preprocessing"]
        assert meta["preprocessing_in_graph"] == ("true" if path == model else "false")


def test_best_exports_best_h5(exported, folder, tmp_path):
    run = exported[0]
    assert main(["export", str(run), "--out", str(tmp_path / "best.onnx"), "--format", "onnx", "--best"]) == 0
    model, record = load_run(run, BEST)
    x = np.stack([load_image(p, tuple(record["image_size"]), record["preprocessing"])
                  for p in image_paths(folder, tmp_path)[:4]])
    expected = F.softmax(Tensor(predict_on_batch(model, x))).numpy()
    got = session(tmp_path / "best.onnx").run([OUTPUT], {INPUT: x})[0]
    assert np.abs(got - expected).max() <= TOLERANCE
    assert "the best epoch (best.h5)" in (tmp_path / "best_onnx.py").read_text()


# ---- refusals ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run(folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("small") / "run"
    assert main(["finetune", "--data", str(folder), "--out", str(run), "--image-size", "32", "--width", "0.0625",
                 *TINY]) == 0
    return run


def test_refuses_a_name_that_is_not_onnx_and_a_folder(small_run, tmp_path, capsys):
    assert main(["export", str(small_run), "--out", str(tmp_path / "model.h5"), "--format", "onnx"]) == 1
    one_error_line(capsys, "export", f"{tmp_path / 'model.h5'}: the name must end in '.onnx'")
    (tmp_path / "model_onnx.py").mkdir()
    assert main(["export", str(small_run), "--out", str(tmp_path / "model.onnx"), "--format", "onnx"]) == 1
    one_error_line(capsys, "export", f"{tmp_path / 'model_onnx.py'} exists and is not a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_onnx.py"]


def test_with_preprocessing_is_for_onnx_only(small_run, tmp_path, capsys):
    assert main(["export", str(small_run), "--out", str(tmp_path / "model.h5"), "--with-preprocessing"]) == 1
    one_error_line(capsys, "export", "--with-preprocessing applies to --format onnx only")
    assert list(tmp_path.iterdir()) == []


class Swish(Layer):
    def forward(self, x):
        return x * F.sigmoid(x)


class OutsideOp(Module):
    def __init__(self):
        super().__init__("outside")
        self.dense = Dense(3, input_dim=4)
        self.relu = ReLU()

    def forward(self, x):
        return self.relu(self.dense(x) * 2.0)


def test_refuses_a_layer_it_cannot_map_and_an_op_outside_the_layers():
    with pytest.raises(WeightsError, match=r"layer swish \(Swish\) has no ONNX mapping in minitl"):
        to_onnx(Sequential([Conv2D(2, 3, input_channels=3), Swish()]), (8, 8, 3))
    model = OutsideOp()
    with pytest.raises(ShapeError, match="the input of layer re_lu is made outside the model's layers"):
        record_graph(model, (1, 4), run=model)
