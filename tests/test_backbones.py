"""VGG19, ResNet50, InceptionV3 and MobileNetV2 against the architectures real Keras built
(tests/data/backbones/manifest_*.json): layer names, weight names and shapes in Keras'
model.layers order, parameter counts, output shapes; a forward pass at a small size; a
save/load round trip by name and by order."""

import json
from pathlib import Path

import numpy as np
import pytest

from minitl import applications
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
    return [(layer.name, [(key, p.shape) for key, p in layer._params.items()]) for layer in model.layers()]


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
