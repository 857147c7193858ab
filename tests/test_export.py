"""minitl export: a fine-tuned run of every arch as Keras' legacy .h5 plus the Keras script
that rebuilds it. The file holds best.h5's layers, weights and values, in the order of the
Keras model the script builds (keras.applications' layer order, from the Keras-written
manifests in tests/data/backbones, then the head); the script names that model. Keras itself
read these files in tests/data/backbones/check_with_keras.py (the export steps)."""
import ast
import json
import runpy
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from finetune_fixtures import one_error_line
from PIL import Image

from minitl import applications, io, transfer
from minitl.cli import build_parser, main
from minitl.data import load_image
from minitl.nn import Dense
from minitl.runs import BEST, CHECKPOINT

MANIFESTS = Path(__file__).parent / "data" / "backbones"

# arch: (input size, finetune options, Keras manifest of the same architecture)
ARCHS = {
    "vgg16": (32, ["--dropout", "0.5"], None),  # no VGG16 manifest: VGG16 has its own Keras fixtures
    "vgg19": (32, ["--pooling", "avg"], "vgg19"),
    "resnet50": (32, [], "resnet50"),
    "inception_v3": (75, ["--pooling", "avg"], "inception_v3"),
    "mobilenet_v2": (32, ["--width", "0.35", "--dropout", "0.25"], "mobilenet_v2_0.35_224"),
}
TINY = ["--hidden", "8", "--freeze-epochs", "1", "--epochs", "1", "--batch-size", "8", "--quiet"]


def finetune(arch, folder, run):
    size, options, _ = ARCHS[arch]
    assert main(["finetune", "--arch", arch, "--data", str(folder), "--out", str(run), "--image-size", str(size),
                 *options, *TINY]) == 0


@pytest.fixture(scope="module", params=list(ARCHS))
def exported(request, folder, tmp_path_factory):
    """(arch, run folder, exported .h5, its script) of a run of one frozen and one unfrozen epoch at width 1
    (alpha 0.35)."""
    arch, tmp = request.param, tmp_path_factory.mktemp(request.param)
    finetune(arch, folder, tmp / "run")
    assert main(["export", str(tmp / "run"), "--out", str(tmp / "model.h5"), "--best"]) == 0
    return arch, tmp / "run", tmp / "model.h5", tmp / "model_keras.py"


def head_of(run):
    """The run's head as minitl builds it from the record (its layers, not its weights)."""
    config = json.loads((run / "record.json").read_text())["model"]
    return transfer.build_head(config["num_classes"], config["hidden"], config["dropout"], config["pooling"])


def script_model(path):
    """What the script's build_model builds: the keras.applications call (class, keywords)
    and the head's (layer class, name) in order; and its CLASSES and INPUT_SHAPE."""
    tree = ast.parse(path.read_text())
    constants = {node.targets[0].id: node.value for node in tree.body if isinstance(node, ast.Assign)}
    build = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "build_model")
    calls = [node for node in ast.walk(build) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)]
    app = next(c for c in calls if ast.unparse(c.func).startswith("keras.applications."))
    head = [(c.func.attr, ast.literal_eval(k.value)) for c in calls if ast.unparse(c.func).startswith("keras.layers.")
            for k in c.keywords if k.arg == "name"]
    return {"application": app.func.attr, "keywords": {k.arg: ast.unparse(k.value) for k in app.keywords},
            "head": head, "classes": ast.literal_eval(constants["CLASSES"]),
            "input_shape": ast.literal_eval(constants["INPUT_SHAPE"])}


def test_export_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "export" in capsys.readouterr().out
    assert "export" in build_parser()._subparsers._group_actions[0].choices


def test_the_file_holds_best_h5_in_the_keras_model_s_order(exported):
    arch, run, path, _ = exported
    best = io.read_keras_weights(run / BEST)
    written = io.read_keras_weights(path)
    assert [(e.name, e.weight_names) for e in written] == [(e.name, e.weight_names) for e in best]
    for a, b in zip(written, best):
        assert len(a.arrays) == len(b.arrays)
        for x, y in zip(a.arrays, b.arrays):
            assert x.dtype == y.dtype and np.array_equal(x, y), a.name
    head = [layer.name for layer in head_of(run).layers() if isinstance(layer, Dense)]
    assert [e.name for e in written][-len(head):] == head
    manifest = ARCHS[arch][2]
    if manifest:  # the base's layers in Keras' model.layers order, with Keras' weight names and shapes
        m = json.loads((MANIFESTS / f"manifest_{manifest}.json").read_text())
        keras_base = [layer for layer in m["layers"][:m["notop"]["layers"]] if layer["weights"]]
        base = written[:-len(head)]
        assert [e.name for e in base] == [layer["name"] for layer in keras_base]
        for e, layer in zip(base, keras_base):
            short = [w.split("/")[-1].split(":")[0] for w in e.weight_names]
            assert [{"depthwise_kernel": "kernel"}.get(w, w) for w in short] == [w for w, _ in layer["weights"]]
            assert [a.shape for a in e.arrays] == [tuple(s) for _, s in layer["weights"]], e.name


def test_the_script_builds_the_run_s_architecture(exported):
    arch, run, path, script = exported
    compile(script.read_text(), str(script), "exec")
    record = json.loads((run / "record.json").read_text())
    built = script_model(script)
    size = ARCHS[arch][0]
    assert built["application"] == {"vgg16": "VGG16", "vgg19": "VGG19", "resnet50": "ResNet50",
                                    "inception_v3": "InceptionV3", "mobilenet_v2": "MobileNetV2"}[arch]
    expected = {"include_top": "False", "weights": "None", "input_shape": "INPUT_SHAPE", "pooling": "None"}
    if arch == "mobilenet_v2":
        expected["alpha"] = "0.35"
    assert built["keywords"] == expected
    assert built["input_shape"] == (size, size, 3) and built["classes"] == record["classes"] == ["blue", "green",
                                                                                                   "red"]
    keras_names = {"Flatten": "Flatten", "GlobalAvgPool2D": "GlobalAveragePooling2D", "Dense": "Dense",
                   "Dropout": "Dropout"}
    assert built["head"] == [(keras_names[type(layer).__name__], layer.name) for layer in head_of(run).layers()]
    text = script.read_text()
    assert f"keras.applications.{arch}.preprocess_input" in text and "model.load_weights(weights)" in text
    assert f"{path.name!r}" in text and ("caffe mode" if arch in ("vgg16", "vgg19", "resnet50") else "tf mode") \
        in text
    assert 'Dense(3, activation="softmax", name="head_predictions")' in text


@pytest.fixture(scope="module")
def small_run(folder, tmp_path_factory):
    """A MobileNetV2 run at alpha 0.35 (the smallest one Keras can build)."""
    run = tmp_path_factory.mktemp("small") / "run"
    finetune("mobilenet_v2", folder, run)
    return run


def test_by_default_the_last_epoch_is_exported_as_evaluate_and_predict_use_it(small_run, tmp_path):
    assert main(["export", str(small_run), "--out", str(tmp_path / "last.h5")]) == 0
    last, checkpoint = io.read_keras_weights(tmp_path / "last.h5"), io.read_keras_weights(small_run / CHECKPOINT)
    assert [e.name for e in last] == [e.name for e in checkpoint]
    for a, b in zip(last, checkpoint):
        assert all(np.array_equal(x, y) for x, y in zip(a.arrays, b.arrays)), a.name
    assert "the last epoch (checkpoint.h5)" in (tmp_path / "last_keras.py").read_text()


def test_the_script_prepares_images_as_minitl(exported, folder, tmp_path, monkeypatch):
    """The script's load_images (resize to cover, center crop), with minitl's preprocess_input
    in place of Keras' (the same formulas: tests/test_backbones.py), gives minitl's inputs."""
    _, run, _, script = exported
    record = json.loads((run / "record.json").read_text())
    size = tuple(record["image_size"])
    wide = tmp_path / "wide.png"  # 50x30: resized and cropped
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3)).astype(np.uint8)).save(wide)
    paths = [str(p) for p in sorted(folder.glob("*/*")) if p.name != "broken.jpg"] + [str(wide)]
    monkeypatch.setitem(sys.modules, "keras", types.SimpleNamespace(applications=applications))
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    x = runpy.run_path(str(script))["load_images"](paths)
    expected = np.stack([load_image(p, size, record["preprocessing"]) for p in paths])
    assert x.shape == expected.shape == (len(paths), *size, 3)
    # minitl resizes only the crop's box, Pillow's same filter: equal up to the rounding of a pixel value
    step = 1.0 if record["preprocessing"] == "caffe" else 1 / 127.5
    assert np.abs(x - expected).max() <= step + 1e-5


@pytest.mark.parametrize("out, message", [
    ("model.weights.h5", "the name must end in '.h5' but not '.weights.h5'"),
    ("model.keras", "the name must end in '.h5'"),
])
def test_refuses_names_keras_reads_as_another_layout(small_run, tmp_path, capsys, out, message):
    assert main(["export", str(small_run), "--out", str(tmp_path / out)]) == 1
    one_error_line(capsys, "export", str(tmp_path / out), message)
    assert list(tmp_path.iterdir()) == []


def test_refuses_an_out_that_is_not_a_file(small_run, tmp_path, capsys):
    (tmp_path / "model.h5").mkdir()
    assert main(["export", str(small_run), "--out", str(tmp_path / "model.h5")]) == 1
    one_error_line(capsys, "export", f"{tmp_path / 'model.h5'} exists and is not a file")
    (tmp_path / "model.h5").rmdir()
    (tmp_path / "model_keras.py").mkdir()
    assert main(["export", str(small_run), "--out", str(tmp_path / "model.h5")]) == 1
    one_error_line(capsys, "export", f"{tmp_path / 'model_keras.py'} exists and is not a file")
    assert not (tmp_path / "model.h5").exists()


def test_refuses_a_folder_that_is_not_a_run_and_a_run_that_lost_its_best_h5(small_run, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "model.h5")]) == 1
    one_error_line(capsys, "export", f"{tmp_path} is not a minitl run directory (no record.json)")
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / BEST).unlink()
    assert main(["export", str(run), "--out", str(tmp_path / "model.h5"), "--best"]) == 1
    one_error_line(capsys, "export", f"{run / BEST} is missing, unlike the file of epoch 2 that record.json names")
    assert not (tmp_path / "model.h5").exists() and not (tmp_path / "model_keras.py").exists()


def test_refuses_a_width_that_keras_applications_cannot_build(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(folder), "--out", str(run), "--image-size", "32", "--width", "0.0625",
                 *TINY]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "model.h5")]) == 1
    one_error_line(capsys, "export", f"{run}: its vgg16 has width 0.0625, which Keras cannot build",
                   "keras.applications.VGG16 has no width multiplier")
    assert not (tmp_path / "model.h5").exists()
