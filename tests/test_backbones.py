"""VGG19, ResNet50, InceptionV3 and MobileNetV2 against the architectures real Keras built
(tests/data/backbones/manifest_*.json): layer names, weight names and shapes in Keras'
model.layers order, parameter counts, output shapes; a forward pass at a small size; a
save/load round trip by name and by order."""

import json
from pathlib import Path

import numpy as np
import pytest

from minitl import applications, no_grad
from minitl.errors import ShapeError
from minitl.io import load_weights, save_weights

DATA = Path(__file__).parent / "data" / "backbones"


def manifest(name):
    return json.loads((DATA / f"manifest_{name}.json").read_text())


def keras_layers(m, include_top):
    layers = [layer for layer in m["layers"] if layer["class"] != "InputLayer"]
    count = m["include_top" if include_top else "notop"]["layers"] - 1  # without the InputLayer
    assert len(layers) >= count
    return layers[:count]


def described(model):
    return [(layer.name, [(key, w.shape) for key, w in [*layer._params.items(), *layer._buffers.items()]])
            for layer in model.layers()]


def expected(layers):
    return [(layer["name"], [(w, tuple(shape)) for w, shape in layer["weights"]]) for layer in layers]


def check_against_manifest(model, m, include_top):
    layers = keras_layers(m, include_top)
    mine, theirs = described(model), expected(layers)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        assert a == b, f"layer {i}: minitl {a}, Keras {b}"
    assert len(mine) == len(theirs)
    counts = m["include_top" if include_top else "notop"]
    assert model.count_params() == counts["count_params"]
    return layers


@pytest.mark.parametrize("include_top", [True, False])
def test_vgg19_is_keras_vgg19(include_top):
    m = manifest("vgg19")
    model = applications.VGG19(include_top=include_top)
    layers = check_against_manifest(model, m, include_top)
    shapes = [shape for _, shape in model.layer_shapes((None, 224, 224, 3))]
    assert shapes == [tuple(layer["output_shape"]) for layer in layers]


def test_vgg19_small_forward_and_max_pooling():
    model = applications.VGG19(include_top=False, input_shape=(32, 32, 3), width=1 / 16, pooling="max")
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    y = model(x).numpy()
    features = applications.VGG19(include_top=False, input_shape=(32, 32, 3), width=1 / 16)
    features.load_state_dict(model.state_dict())
    assert y.shape == (2, 32) and np.array_equal(y, features(x).numpy().max(axis=(1, 2)))


@pytest.mark.parametrize("module, mode", [("vgg19", "caffe"), ("resnet50", "caffe"), ("inception_v3", "tf"),
                                          ("mobilenet_v2", "tf")])
def test_preprocess_input_is_the_model_family_s_mode(module, mode):
    m = manifest({"mobilenet_v2": "mobilenet_v2_1.0_224"}.get(module, module))
    assert m["preprocess_input_mode"] == mode
    x = np.random.default_rng(1).integers(0, 256, size=(2, 4, 4, 3)).astype(np.float32)
    out = getattr(applications, module).preprocess_input(x)
    if mode == "caffe":
        assert np.array_equal(out, x[..., ::-1] - np.float32([103.939, 116.779, 123.68]))
    else:
        assert np.array_equal(out, x / np.float32(127.5) - np.float32(1))
        assert out.min() >= -1 and out.max() <= 1


# (manifest, class, keyword arguments, Keras' default input size)
FULL = [("resnet50", "ResNet50", {}, 224), ("inception_v3", "InceptionV3", {}, 299),
        ("mobilenet_v2_1.0_224", "MobileNetV2", {"alpha": 1.0}, 224),
        ("mobilenet_v2_0.35_224", "MobileNetV2", {"alpha": 0.35}, 224)]


# Multiply-adds at Keras' default size, as published: ResNet50 3.8e9 (He et al., 2015, Table 1),
# MobileNetV2 300 M and 59 M (Sandler et al., 2018, and the table of Keras' MobileNetV2 docs).
PUBLISHED_MULTIPLY_ADDS = {"resnet50": 3.8e9, "mobilenet_v2_1.0_224": 300e6, "mobilenet_v2_0.35_224": 59e6}


@pytest.mark.parametrize("include_top", [True, False], ids=["top", "notop"])
@pytest.mark.parametrize("name, cls, kwargs, size", FULL, ids=[f[0] for f in FULL])
def test_layers_weights_and_counts_are_keras(name, cls, kwargs, size, include_top):
    m = manifest(name)
    model = getattr(applications, cls)(include_top=include_top, input_shape=(size, size, 3), **kwargs)
    check_against_manifest(model, m, include_top)
    assert model.name == m["include_top"]["model_name"]
    bns = [layer for layer in model.layers() if type(layer).__name__ == "BatchNormalization"]
    assert bns
    for bn in bns:
        assert (bn.momentum, bn.epsilon, bn.center, bn.scale) == tuple(m["batchnorm"][k] for k in (
            "momentum", "epsilon", "center", "scale")), bn.name
    if include_top:  # the output shapes at Keras' default size, and the multiply-adds there
        shapes = [shape for _, shape in model.layer_shapes((None, size, size, 3))]
        assert shapes == [tuple(layer["output_shape"]) for layer in keras_layers(m, True)]
        if name in PUBLISHED_MULTIPLY_ADDS:
            assert applications.multiply_adds(model, (size, size, 3)) == pytest.approx(
                PUBLISHED_MULTIPLY_ADDS[name], rel=0.02)


SMALL = [("ResNet50", {"width": 1 / 16}, 32), ("InceptionV3", {"width": 1 / 16}, 75),
         ("MobileNetV2", {"alpha": 0.35}, 32), ("VGG19", {"width": 1 / 16}, 32)]


@pytest.mark.parametrize("cls, kwargs, size", SMALL, ids=[s[0] for s in SMALL])
def test_forward_at_the_minimum_size(cls, kwargs, size):
    backbone = getattr(applications, cls)
    assert backbone.MIN_SIZE == size
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    model = backbone(input_shape=(size, size, 3), classes=7, **kwargs).eval()
    probs = model(x).numpy()
    assert probs.shape == (2, 7) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    logits = model.logits(x).numpy()  # the output is the softmax of the logits
    assert np.allclose(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), probs, atol=1e-6)
    features = backbone(include_top=False, input_shape=(size, size, 3), **kwargs)
    assert features(x).numpy().ndim == 4
    for pooling in ("avg", "max"):
        pooled = backbone(include_top=False, input_shape=(size, size, 3), pooling=pooling, **kwargs)
        assert pooled(x).numpy().shape == (2, features.layer_shapes((None, size, size, 3))[-1][1][-1])
    with pytest.raises(ShapeError, match=f"at least {size}x{size}"):
        backbone(input_shape=(size - 1, size, 3), **kwargs)


ROUND_TRIP = [*FULL[:3], ("vgg19-notop", "VGG19", {"include_top": False}, 224)]


@pytest.mark.parametrize("name, cls, kwargs, size", ROUND_TRIP, ids=[f[0] for f in ROUND_TRIP])
def test_full_model_save_and_load_round_trip_is_bit_identical(tmp_path, name, cls, kwargs, size):
    backbone = getattr(applications, cls)
    model = backbone(input_shape=(size, size, 3), **kwargs)
    rng = np.random.default_rng(5)
    for w in model.parameters() + model.buffers():  # every weight, moving statistics too, made distinct
        w.data = rng.standard_normal(w.shape, dtype=np.float32)
    path = tmp_path / f"{name}.h5"
    save_weights(model, path)
    other = backbone(input_shape=(size, size, 3), **kwargs)
    for by_name in (True, False):
        for w in other.parameters() + other.buffers():
            w.data = np.zeros_like(w.data)
        load_weights(other, path, by_name=by_name)
        for (key, a), (_, b) in zip(model._named_state().items(), other._named_state().items()):
            assert np.array_equal(a.data, b.data), (by_name, key)


def test_named_blocks():
    resnet = applications.ResNet50(include_top=False, input_shape=(32, 32, 3), width=1 / 16)
    assert list(resnet.blocks()) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    mobilenet = applications.MobileNetV2(include_top=False, input_shape=(32, 32, 3), alpha=0.35)
    assert list(mobilenet.blocks()) == ["conv1", *(f"bottleneck{i}" for i in range(1, 8)), "conv_1"]
    assert next(layer.name for layer in mobilenet.blocks()["bottleneck7"]) == "block_16_expand"
    inception = applications.InceptionV3(include_top=False, input_shape=(75, 75, 3), width=1 / 16)
    assert list(inception.blocks()) == ["stem", *(f"mixed{i}" for i in range(11))]
    assert inception.blocks()["mixed9"][-1].name == "mixed9"
    for model in (resnet, mobilenet, inception):
        blocks = [layer for layers in model.blocks().values() for layer in layers]
        assert blocks == model.layers()  # every layer in exactly one block, in order


@pytest.mark.parametrize("layout, by_name", [("keras2.h5", True), ("keras2.h5", False), ("keras3_legacy.h5", True),
                                             ("keras3_legacy.h5", False), ("weights.h5", True)])
def test_a_small_resnet_reproduces_keras(layout, by_name):
    """tests/data/backbones/resnetmini_top_32: Keras' ResNet50 stem and blocks with 8 stem
    filters and the stages (4 filters, 2 blocks, stride 1), (8, 1, 2): minitl's ResNet50 code
    with those stages loads Keras' three files and gives Keras' outputs in both BN modes."""
    model = applications.ResNet50(input_shape=(32, 32, 3), width=1 / 8, stages=((32, 2, 1), (64, 1, 2)), classes=5)
    assert model.count_params() == 4213
    load_weights(model, DATA / f"resnetmini_top_32.{layout}", by_name=by_name)
    with np.load(DATA / "resnetmini_top_32.npz") as z:
        features = model.eval().features(z["x"]).numpy()
        np.testing.assert_allclose(features.mean(axis=(1, 2)), z["inference.avg_pool"], rtol=1e-4, atol=1e-5)
    reproduces_keras(model, "resnetmini_top_32", applications.resnet50.preprocess_input)


def reproduces_keras(model, fixture, preprocess_input):
    """The fixture's Keras outputs from ``model`` (weights loaded): its preprocessing, inference
    mode (also under no_grad, where BN, ReLU and Add work in place, leaving the input as it
    was), and training mode on the batch statistics with Keras' moving-average update."""
    with np.load(DATA / f"{fixture}.npz") as z:
        assert np.array_equal(preprocess_input(z["x_raw"]), z["x"])
        out = model.eval()(z["x"]).numpy()
        np.testing.assert_allclose(out, z["inference.predictions"], rtol=1e-5, atol=1e-6)
        x = z["x"].copy()
        with no_grad():
            np.testing.assert_array_equal(model(x).numpy(), out)
        np.testing.assert_array_equal(x, z["x"])
        np.testing.assert_allclose(model.train()(z["x"]).numpy(), z["training.predictions"], rtol=1e-4, atol=1e-6)
        for bn in [layer for layer in model.layers() if type(layer).__name__ == "BatchNormalization"]:
            np.testing.assert_allclose(bn.moving_mean.data, z[f"training.moving_mean.{bn.name}"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(bn.moving_variance.data, z[f"training.moving_variance.{bn.name}"],
                                       rtol=1e-5, atol=1e-6)


class SmallMobileNet(applications.backbone.Backbone):
    """tests/data/backbones/mobilenetv2mini_32, made of MobileNetV2's own pieces: Conv1 (8
    filters), the inverted residual blocks 0 (to 4), 1 (x3, stride 2, to 8) and 2 (x3, to 8,
    with its add), Conv_1 (16) and the top (5 classes)."""

    PREPROCESSING = "tf"

    def __init__(self):
        from minitl.applications.mobilenet_v2 import InvertedResidual, _bn
        from minitl.nn import Conv2D, ReLU
        super().__init__("mobilenetv2mini", (32, 32, 3), True, None, "softmax")
        self.Conv1 = Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="Conv1")
        self.bn_Conv1, self.Conv1_relu = _bn("bn_Conv1"), ReLU(6.0, name="Conv1_relu")
        self.inverted_residuals = [InvertedResidual(8, 4, 1, 1, 0, (16, 16), "glorot_uniform"),
                                   InvertedResidual(4, 8, 3, 2, 1, (16, 16), "glorot_uniform"),
                                   InvertedResidual(8, 8, 3, 1, 2, (8, 8), "glorot_uniform")]
        for block in self.inverted_residuals:
            setattr(self, block.name, block)
        self.Conv_1 = Conv2D(16, 1, use_bias=False, name="Conv_1")
        self.Conv_1_bn, self.out_relu = _bn("Conv_1_bn"), ReLU(6.0, name="out_relu")
        self.add_top(5, "glorot_uniform", pool_names=("global_average_pooling2d",) * 3)
        self.finish()

    features = applications.MobileNetV2.features


@pytest.mark.parametrize("layout, by_name", [("keras2.h5", True), ("keras2.h5", False), ("keras3_legacy.h5", True),
                                             ("keras3_legacy.h5", False), ("weights.h5", True)])
def test_mobilenet_v2_blocks_reproduce_keras(layout, by_name):
    model = SmallMobileNet()
    assert model.count_params() == 1881
    load_weights(model, DATA / f"mobilenetv2mini_32.{layout}", by_name=by_name)
    reproduces_keras(model, "mobilenetv2mini_32", applications.mobilenet_v2.preprocess_input)
