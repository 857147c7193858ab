"""Transfer learning with the other backbones, end to end on tiny image folders: MobileNetV2
(alpha 0.35 at its 32x32 minimum, the smallest of them) through the command line, and the
arch in the record, the 'tf' preprocessing, BatchNormalization when blocks are unfrozen,
resume, evaluate, predict and summary; ResNet50 and InceptionV3 through the library."""
import json

import numpy as np
import pytest
from finetune_fixtures import params

from minitl import functional as F
from minitl import io, runs, transfer
from minitl.applications import BACKBONES, MobileNetV2, ResNet50, imagenet_utils
from minitl.cli import main
from minitl.data import ImageFolder, load_image
from minitl.nn import manual_seed


@pytest.fixture(scope="module")
def mobilenet_notop(tmp_path_factory):
    manual_seed(2)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_notop.h5"
    base = MobileNetV2(include_top=False, input_shape=(32, 32, 3), alpha=0.35)
    rng = np.random.default_rng(3)
    for bn in [layer for layer in base.layers() if type(layer).__name__ == "BatchNormalization"]:
        bn.moving_mean.data = rng.normal(0, 0.1, bn.moving_mean.shape).astype(np.float32)
        bn.moving_variance.data = rng.uniform(0.5, 2, bn.moving_variance.shape).astype(np.float32)
    io.save_weights(base, path)
    return path


def test_archs_are_the_backbones():
    assert set(runs.ARCHS) == set(BACKBONES)


def test_cli_finetune_mobilenet_v2(folder, mobilenet_notop, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["finetune", "--arch", "mobilenet_v2", "--data", str(folder), "--weights", str(mobilenet_notop),
            "--out", str(run), "--epochs", "1", "--image-size", "32", "--width", "0.35", "--pooling", "avg",
            "--hidden", "8", "--batch-size", "4", "--unfreeze-blocks", "2", "--freeze-epochs", "1", "--quiet"]
    assert main(args) == 0
    record = json.loads((run / "record.json").read_text())
    assert record["model"]["arch"] == "mobilenet_v2" and record["preprocessing"] == "tf"
    assert record["training"]["unfreeze_blocks"] == 2 and record["feature_cache"]  # in the frozen phase
    model, _ = transfer.load_run(run)
    base = model[0]
    stored = {e.name: e.arrays for e in io.read_keras_weights(mobilenet_notop)}
    # the frozen blocks kept the file's weights, moving statistics too (a frozen BN runs in inference mode)
    np.testing.assert_array_equal(base.get_layer("block_3_depthwise_BN").moving_mean.data,
                                  stored["block_3_depthwise_BN"][2])
    np.testing.assert_array_equal(base.get_layer("block_3_project").kernel.data, stored["block_3_project"][0])
    # the unfrozen ones (bottleneck7 and conv_1) trained, their BN on batch statistics
    assert not np.array_equal(base.get_layer("Conv_1").kernel.data, stored["Conv_1"][0])
    assert not np.array_equal(base.get_layer("Conv_1_bn").moving_mean.data, stored["Conv_1_bn"][2])
    out = resume_evaluate_predict_summary(folder, run, "mobilenet_v2", 32, capsys)
    assert "block_16_project_BN" in out and "(None, 1, 1, 1280)" in out


def test_feature_cache_with_a_frozen_resnet50(folder, tmp_path):
    """A frozen ResNet50 base (every BN in inference mode) gives the same head with and without the cache."""
    with pytest.warns(UserWarning):
        train = ImageFolder(folder, (32, 32), validation_split=0.34, subset="training", seed=0,
                            preprocess="caffe")
    settings = runs.Settings(arch="resnet50", width=1 / 16, hidden=(8,), batch_size=4, epochs=2, pooling="avg",
                             lr=1e-5)  # random ResNet features are large: a small rate keeps the head finite
    heads = []
    for cache in (True, False):
        model, record = transfer.finetune(train, None, tmp_path / str(cache), settings, cache_features=cache,
                                          progress=False, log=lambda *a: None)
        assert record["model"]["arch"] == "resnet50" and record["preprocessing"] == "caffe"
        heads.append(params(model[1]))
    assert (tmp_path / "True" / "features.h5").is_file()
    for (k, a), b in zip(heads[0].items(), heads[1].values()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=k)


def test_unfreeze_blocks_counts_the_backbone_s_blocks():
    base = ResNet50(include_top=False, input_shape=(32, 32, 3), width=1 / 16)
    transfer.set_trainable_blocks(base, 1)
    trainable = {layer.name for layer in base.layers() if any(p.requires_grad for p in layer.parameters())}
    assert trainable and all(name.startswith("conv5_") for name in trainable)
    with pytest.raises(ValueError, match="conv1, conv2, conv3, conv4, conv5"):
        transfer.set_trainable_blocks(base, 6)


def test_inception_v3_transfer_model_builds_at_its_minimum_size():
    model = transfer.build_model({"arch": "inception_v3", "input_shape": [75, 75, 3], "width": 1 / 16,
                                  "num_classes": 3, "hidden": [8], "pooling": "avg"})
    x = imagenet_utils.preprocess_tf(np.random.default_rng(0).integers(0, 256, (2, 75, 75, 3)))
    assert model(x).numpy().shape == (2, 3)
    assert len(model[0].blocks()) == 12


def test_minitl_models_without_timing(capsys):
    assert main(["models", "--no-time", "--arch", "mobilenet_v2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = lines[1].split()
    assert row[:4] == ["mobilenet_v2", "3,538,984", "0.301", "G"] and row[4] == "-"  # Keras' count; 300 M published
    assert lines[-1].startswith("at 224x224")
    assert main(["models", "--no-time", "--image-size", "75", "--width", "0.0625"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert list(rows) == list(BACKBONES)
    for arch, backbone in BACKBONES.items():
        model = backbone(input_shape=(75, 75, 3), **{backbone.WIDTH_ARGUMENT: 0.0625})
        assert rows[arch][1] == f"{model.count_params():,}"
        assert rows[arch][-1] == str(len(model.blocks()))


@pytest.mark.parametrize("arch, size, last_layer", [("vgg19", 32, "block5_conv4"), ("resnet50", 32, "conv5_block3_out"),
                                                    ("inception_v3", 75, "mixed10")])
def test_cli_finetune_resume_evaluate_predict_summary(arch, size, last_layer, folder, tmp_path, capsys):
    """The command line end to end with the other archs (tiny widths, random notop weights)."""
    backbone = BACKBONES[arch]
    manual_seed(4)
    notop = tmp_path / f"{arch}_notop.h5"
    io.save_weights(backbone(include_top=False, input_shape=(size, size, 3), **{backbone.WIDTH_ARGUMENT: 1 / 16}),
                    notop)
    run = tmp_path / "run"
    args = ["finetune", "--arch", arch, "--data", str(folder), "--weights", str(notop), "--out", str(run),
            "--epochs", "1", "--image-size", str(size), "--width", "0.0625", "--pooling", "avg", "--hidden", "8",
            "--batch-size", "4", "--unfreeze-blocks", "1", "--freeze-epochs", "1", "--lr", "1e-4", "--quiet"]
    assert main(args) == 0
    assert last_layer in resume_evaluate_predict_summary(folder, run, arch, size, capsys)


def resume_evaluate_predict_summary(folder, run, arch, size, capsys):
    """Resume a run of one frozen and one unfrozen epoch for a second unfrozen one, evaluate it,
    check that predict prepares an image as the run was trained (its preprocessing mode) and
    prints the model's figures; returns the summary."""
    assert main(["finetune", "--data", str(folder), "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    record = json.loads((run / "record.json").read_text())
    mode = BACKBONES[arch].PREPROCESSING
    assert record["epoch"] == 3 and record["model"]["arch"] == arch
    assert record["preprocessing"] == mode and record["image_size"] == [size, size]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(folder), "--quiet"]) == 0
    assert "macro avg" in capsys.readouterr().out
    image = next((folder / "green").glob("*.png"))
    assert main(["predict", str(run), str(image), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 3
    model, _ = transfer.load_run(run)
    x = load_image(image, (size, size), preprocess=mode)
    if mode == "tf":
        assert x.min() >= -1 and x.max() <= 1
    probs = F.softmax(model(x[None])).numpy()[0]
    top = np.argsort(-probs)[:2]
    assert [line.split() for line in lines[1:]] == [[record["classes"][i], f"{probs[i]:.4f}"] for i in top]
    assert main(["summary", str(run)]) == 0
    out = capsys.readouterr().out
    assert "head_predictions" in out
    return out
