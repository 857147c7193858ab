"""Writes the Keras-made fixtures in tests/data/backbones (see README.md there).

Not part of minitl and not run by the tests: it needs Keras, which minitl does
not depend on. Run it from a throwaway virtual environment, in three steps:

    # 1. Keras 3 (torch backend): the weight-file table, the full-architecture
    #    manifests, and the small models' Keras 3 files and outputs
    KERAS_BACKEND=torch KVENV/bin/python make_backbone_fixtures.py keras3 OUT
    # 2. Keras 2 (tf_keras on TensorFlow): the same small models, weights taken
    #    from step 1, written by Keras 2's own save_weights ('.keras2.h5')
    TF_USE_LEGACY_KERAS=1 TFVENV/bin/python make_backbone_fixtures.py keras2 OUT
    # 3. Keras 3 reloads every weight file into a fresh model and compares the
    #    outputs; writes fixtures_manifest.json (sizes, md5s, shapes, checks)
    KERAS_BACKEND=torch KVENV/bin/python make_backbone_fixtures.py check OUT

The steps hand notes to each other in OUT/*.tmp.json; those are not fixtures.
KVENV has `pip install keras h5py numpy torch` and TFVENV has
`pip install tensorflow-cpu tf-keras h5py numpy`. Every random number comes
from numpy.random.default_rng(seed), the seed per model in MINI (raised until
the kink margins hold, see keras3_minis); running the steps again gives the
same files.
"""
import hashlib
import inspect
import json
import os
import re
import sys
from pathlib import Path

import h5py
import numpy as np

MODE, OUT = sys.argv[1], Path(sys.argv[2])
if MODE == "keras2":
    import tf_keras as keras
else:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

N_IMAGES = 2
# name: (seed, input size, preprocess_input family)
MINI = {
    "resnetmini_top_32": (3101, 32, "resnet50"),
    "mobilenetv2mini_32": (3201, 32, "mobilenet_v2"),
    "inceptionmini_32": (3301, 32, "inception_v3"),
}
LAYOUTS = ("keras2.h5", "keras3_legacy.h5", "weights.h5")


# ---------------------------------------------------------------- small models
# The layer names and arguments are those of keras/src/applications/*.py, at tiny widths.

def resnet_block(L, x, filters, stride, conv_shortcut, name):
    """keras.applications.resnet.residual_block_v1 (bottleneck, stride on the first 1x1)."""
    if conv_shortcut:
        shortcut = L.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = L.BatchNormalization(axis=3, epsilon=1.001e-5, name=f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = L.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=1.001e-5, name=f"{name}_1_bn")(x)
    x = L.Activation("relu", name=f"{name}_1_relu")(x)
    x = L.Conv2D(filters, 3, padding="SAME", name=f"{name}_2_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=1.001e-5, name=f"{name}_2_bn")(x)
    x = L.Activation("relu", name=f"{name}_2_relu")(x)
    x = L.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=1.001e-5, name=f"{name}_3_bn")(x)
    x = L.Add(name=f"{name}_add")([shortcut, x])
    return L.Activation("relu", name=f"{name}_out")(x)


def resnet_mini(size, top):
    """ResNet50's stem, conv2_block1 (projection, stride 1), conv2_block2 (identity),
    conv3_block1 (projection, stride 2); with top: avg_pool + predictions (softmax)."""
    L = keras.layers
    inp = keras.Input((size, size, 3))
    x = L.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(inp)
    x = L.Conv2D(8, 7, strides=2, use_bias=True, name="conv1_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=1.001e-5, name="conv1_bn")(x)
    x = L.Activation("relu", name="conv1_relu")(x)
    x = L.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = L.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    x = resnet_block(L, x, 4, 1, True, "conv2_block1")
    x = resnet_block(L, x, 4, 1, False, "conv2_block2")
    x = resnet_block(L, x, 8, 2, True, "conv3_block1")
    if top:
        x = L.GlobalAveragePooling2D(name="avg_pool")(x)
        x = L.Dense(5, activation="softmax", name="predictions")(x)
    return keras.Model(inp, x, name="resnetmini")


def correct_pad(x, kernel_size):
    """keras.applications.imagenet_utils.correct_pad (channels_last)."""
    h, w = x.shape[1:3]
    adjust = (1 - h % 2, 1 - w % 2)
    c = kernel_size // 2
    return ((c - adjust[0], c), (c - adjust[1], c))


def inverted_res_block(L, x, expansion, stride, filters, block_id):
    """keras.applications.mobilenet_v2._inverted_res_block, filters given directly."""
    in_channels = x.shape[-1]
    inputs = x
    prefix = f"block_{block_id}_"
    if block_id:
        x = L.Conv2D(expansion * in_channels, kernel_size=1, padding="same", use_bias=False,
                     activation=None, name=f"{prefix}expand")(x)
        x = L.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name=f"{prefix}expand_BN")(x)
        x = L.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    else:
        prefix = "expanded_conv_"
    if stride == 2:
        x = L.ZeroPadding2D(padding=correct_pad(x, 3), name=f"{prefix}pad")(x)
    x = L.DepthwiseConv2D(kernel_size=3, strides=stride, activation=None, use_bias=False,
                          padding="same" if stride == 1 else "valid", name=f"{prefix}depthwise")(x)
    x = L.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name=f"{prefix}depthwise_BN")(x)
    x = L.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = L.Conv2D(filters, kernel_size=1, padding="same", use_bias=False, activation=None,
                 name=f"{prefix}project")(x)
    x = L.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name=f"{prefix}project_BN")(x)
    if in_channels == filters and stride == 1:
        return L.Add(name=f"{prefix}add")([inputs, x])
    return x


def mobilenetv2_mini(size):
    """MobileNetV2's Conv1 (3x3/2 'same'), expanded_conv (no expand, no Add), block_1 (stride 2:
    correct_pad + 'valid' depthwise), block_2 (stride 1, Add), Conv_1 + out_relu,
    then GlobalAveragePooling2D + predictions (softmax) as MobileNetV2's top."""
    L = keras.layers
    inp = keras.Input((size, size, 3))
    x = L.Conv2D(8, kernel_size=3, strides=(2, 2), padding="same", use_bias=False, name="Conv1")(inp)
    x = L.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name="bn_Conv1")(x)
    x = L.ReLU(6.0, name="Conv1_relu")(x)
    x = inverted_res_block(L, x, 1, 1, 4, 0)
    x = inverted_res_block(L, x, 3, 2, 8, 1)
    x = inverted_res_block(L, x, 3, 1, 8, 2)
    x = L.Conv2D(16, kernel_size=1, use_bias=False, name="Conv_1")(x)
    x = L.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name="Conv_1_bn")(x)
    x = L.ReLU(6.0, name="out_relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(5, activation="softmax", name="predictions")(x)
    return keras.Model(inp, x, name="mobilenetv2mini")


def conv2d_bn(L, x, filters, num_row, num_col, padding="same", strides=(1, 1)):
    """keras.applications.inception_v3.conv2d_bn with name=None (automatic names)."""
    x = L.Conv2D(filters, (num_row, num_col), strides=strides, padding=padding, use_bias=False)(x)
    x = L.BatchNormalization(axis=3, scale=False)(x)
    return L.Activation("relu")(x)


def inception_mini(size):
    """InceptionV3's stem convs (3x3/2 'valid', then 3x3 'same'), a mixed0-style block
    (1x1 | 1x1->5x5 | avg 3x3/1 'same'->1x1), a mixed3-style reduction (3x3/2 'valid' |
    1x1->3x3/2 'valid' | max 3x3/2 'valid'), and a block with the mixed4-style 1x7->7x1
    and the mixed9-style 1x3 | 3x1 split ('mixed2_0'). Automatic layer names, as in
    InceptionV3."""
    L = keras.layers
    inp = keras.Input((size, size, 3))
    x = conv2d_bn(L, inp, 8, 3, 3, strides=(2, 2), padding="valid")
    x = conv2d_bn(L, x, 8, 3, 3)
    b1 = conv2d_bn(L, x, 4, 1, 1)
    b5 = conv2d_bn(L, x, 3, 1, 1)
    b5 = conv2d_bn(L, b5, 4, 5, 5)
    bp = L.AveragePooling2D((3, 3), strides=(1, 1), padding="same")(x)
    bp = conv2d_bn(L, bp, 2, 1, 1)
    x = L.concatenate([b1, b5, bp], axis=3, name="mixed0")
    r3 = conv2d_bn(L, x, 8, 3, 3, strides=(2, 2), padding="valid")
    rd = conv2d_bn(L, x, 4, 1, 1)
    rd = conv2d_bn(L, rd, 6, 3, 3, strides=(2, 2), padding="valid")
    rp = L.MaxPooling2D((3, 3), strides=(2, 2))(x)
    x = L.concatenate([r3, rd, rp], axis=3, name="mixed1")
    b7 = conv2d_bn(L, x, 4, 1, 1)
    b7 = conv2d_bn(L, b7, 4, 1, 7)
    b7 = conv2d_bn(L, b7, 6, 7, 1)
    b3 = conv2d_bn(L, x, 4, 1, 1)
    b3_1 = conv2d_bn(L, b3, 4, 1, 3)
    b3_2 = conv2d_bn(L, b3, 4, 3, 1)
    b3 = L.concatenate([b3_1, b3_2], axis=3, name="mixed2_0")
    bp = L.AveragePooling2D((3, 3), strides=(1, 1), padding="same")(x)
    bp = conv2d_bn(L, bp, 2, 1, 1)
    x = L.concatenate([b7, b3, bp], axis=3, name="mixed2")
    return keras.Model(inp, x, name="inceptionmini")


def build_mini(name):
    keras.backend.clear_session()  # automatic names start again at conv2d, batch_normalization, ...
    size = MINI[name][1]
    if name.startswith("resnetmini"):
        return resnet_mini(size, top="_top_" in name)
    if name.startswith("mobilenetv2mini"):
        return mobilenetv2_mini(size)
    return inception_mini(size)


# ----------------------------------------------------------------- utilities

def to_numpy(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def layer_record(layer):
    """One layer of a manifest: name, class, key config, inbound layers, weights, output shape."""
    keep = ("filters", "kernel_size", "strides", "padding", "activation", "use_bias",
            "depth_multiplier", "momentum", "epsilon", "center", "scale", "axis", "pool_size",
            "units", "max_value", "negative_slope", "threshold", "keepdims", "batch_shape")
    cfg = layer.get_config()
    config = {k: cfg[k] for k in keep if k in cfg}
    for k in ("dilation_rate", "groups"):
        if k in cfg and cfg[k] not in (1, (1, 1), [1, 1]):
            config[k] = cfg[k]
    inbound = []
    for node in layer._inbound_nodes:
        inbound += [t._keras_history[0].name for t in node.input_tensors]
    out_shape = layer.output.shape if hasattr(layer, "output") else None
    return {
        "name": layer.name,
        "class": layer.__class__.__name__,
        "config": json.loads(json.dumps(config)),
        "inbound": inbound,
        "weights": [[w.name, list(w.shape)] for w in layer.weights],
        "trainable_weights": len(layer.trainable_weights),
        "output_shape": list(out_shape) if out_shape is not None else None,
    }


def dump_manifest(path, head, layers):
    """JSON with one layer per line: small, and readable in a diff."""
    text = json.dumps(head, indent=1)[:-2] + ',\n "layers": [\n'
    text += ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in layers)
    text += "\n ]\n}\n"
    json.loads(text)
    Path(path).write_text(text)


# ------------------------------------------------ step 1a: the weight-file table

APPS = "keras.src.applications"


def weight_file_table():
    from keras.src.applications import (
        imagenet_utils,
        inception_v3,
        mobilenet_v2,
        resnet,
        vgg19,
    )

    def hashes_by_file(module):
        src = inspect.getsource(module)
        found = re.findall(r'get_file\(\s*"([^"]+)",\s*(\w+),.*?file_hash="([0-9a-f]{32})"', src, re.DOTALL)
        return {fname: (getattr(module, const), h) for fname, const, h in found}

    entries = {}

    def add(key, fname, url, md5sum, model, include_top, description, source, **extra):
        assert url.endswith("/" + fname), (url, fname)
        entries[key] = {"file": fname, "url": url, "bytes": None, "md5": md5sum, "model": model,
                        "include_top": include_top, **extra, "description": description,
                        "source": source}

    for module, model, key, pretty in ((vgg19, "VGG19", "vgg19", "VGG19"),
                                       (inception_v3, "InceptionV3", "inception_v3", "InceptionV3")):
        table = hashes_by_file(module)
        assert len(table) == 2, table
        for fname, (url, h) in table.items():
            top = not fname.endswith("_notop.h5")
            add(
                key + ("" if top else "-notop"),
                fname,
                url,
                h,
                model,
                top,
                f"Keras {pretty} ImageNet weights "
                + ("with the classifier" if top else "without the classifier (include_top=False)"),
                f"{APPS}.{module.__name__.split('.')[-1]}: get_file(..., file_hash=...)",
            )
    top_hash, notop_hash = resnet.WEIGHTS_HASHES["resnet50"]
    for top, h in ((True, top_hash), (False, notop_hash)):
        fname = "resnet50_weights_tf_dim_ordering_tf_kernels" + ("" if top else "_notop") + ".h5"
        add(
            "resnet50" + ("" if top else "-notop"),
            fname,
            resnet.BASE_WEIGHTS_PATH + fname,
            h,
            "ResNet50",
            top,
            "Keras ResNet50 ImageNet weights "
            + ("with the classifier" if top else "without the classifier (include_top=False)"),
            f"{APPS}.resnet: BASE_WEIGHTS_PATH + file name, WEIGHTS_HASHES['resnet50']",
        )
    src = inspect.getsource(mobilenet_v2)
    alphas = [float(a) for a in re.search(r"alpha not in \[([^\]]+)\]", src).group(1).split(",")]
    rows_all = [int(r) for r in re.search(r"rows not in \[([^\]]+)\]", src).group(1).split(",")]
    assert "file_hash" not in src  # MobileNetV2's get_file calls pass no hash
    for alpha in alphas:
        for rows in rows_all:
            for top in (True, False):
                fname = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels" + (
                    f"_{float(alpha)}_{rows}.h5" if top else f"_{float(alpha)}_{rows}_no_top.h5"
                )
                add(
                    f"mobilenet_v2_{float(alpha)}_{rows}" + ("" if top else "-notop"),
                    fname,
                    mobilenet_v2.BASE_WEIGHT_PATH + fname,
                    None,
                    "MobileNetV2",
                    top,
                    f"Keras MobileNetV2 ImageNet weights, alpha {float(alpha)}, {rows}x{rows} input, "
                    + ("with the classifier" if top else "without the classifier (include_top=False)"),
                    f"{APPS}.mobilenet_v2: BASE_WEIGHT_PATH + file name (no file_hash given)",
                    alpha=float(alpha),
                    rows=rows,
                )
    url = imagenet_utils.CLASS_INDEX_PATH
    h = re.search(
        r'CLASS_INDEX_PATH,.*?file_hash="([0-9a-f]{32})"', inspect.getsource(imagenet_utils), re.DOTALL
    ).group(1)
    entries["imagenet-class-index"] = {
        "file": url.rsplit("/", 1)[1],
        "url": url,
        "bytes": None,
        "md5": h,
        "model": None,
        "include_top": None,
        "description": "ImageNet class index used by decode_predictions",
        "source": f"{APPS}.imagenet_utils: CLASS_INDEX_PATH, file_hash",
    }
    modes = {}
    for key, module in (
        ("vgg19", vgg19),
        ("resnet50", resnet),
        ("inception_v3", inception_v3),
        ("mobilenet_v2", mobilenet_v2),
    ):
        found = set(re.findall(r'def preprocess_input\(.*?mode="(\w+)"', inspect.getsource(module), re.DOTALL))
        assert len(found) == 1, (key, found)
        modes[key] = found.pop()
    return entries, alphas, rows_all, modes


# --------------------------------------------- step 1b: full-architecture manifests

FULL = {
    # file stem: (constructor, kwargs, default input)
    "vgg19": ("VGG19", {}, 224),
    "resnet50": ("ResNet50", {}, 224),
    "inception_v3": ("InceptionV3", {}, 299),
    "mobilenet_v2_1.0_224": ("MobileNetV2", {"alpha": 1.0}, 224),
    "mobilenet_v2_0.35_224": ("MobileNetV2", {"alpha": 0.35}, 224),
}


def full_manifests(modes):
    batchnorm = {}
    for stem, (ctor, kwargs, size) in FULL.items():
        recs = {}
        counts = {}
        for top in (True, False):
            keras.backend.clear_session()
            m = getattr(keras.applications, ctor)(weights=None, include_top=top, input_shape=(size, size, 3), **kwargs)
            recs[top] = [layer_record(layer) for layer in m.layers]
            counts[top] = {
                "model_name": m.name,
                "layers": len(m.layers),
                "count_params": int(m.count_params()),
                "trainable_params": int(sum(np.prod(w.shape) for w in m.trainable_weights)),
                "non_trainable_params": int(sum(np.prod(w.shape) for w in m.non_trainable_weights)),
            }
        n = counts[False]["layers"]
        assert recs[True][:n] == recs[False], f"{stem}: notop is not a prefix of top"
        bns = {
            (r["config"]["momentum"], r["config"]["epsilon"], r["config"]["center"], r["config"]["scale"])
            for r in recs[True]
            if r["class"] == "BatchNormalization"
        }
        family = stem.split("_1.0")[0].split("_0.35")[0]
        bn = [{"momentum": b[0], "epsilon": b[1], "center": b[2], "scale": b[3]} for b in sorted(bns)]
        batchnorm[family] = bn[0] if len(bn) == 1 else (bn or None)
        head = {
            "model": ctor,
            "kwargs": {**kwargs, "weights": None, "input_shape": [size, size, 3]},
            "written_by": f"keras {keras.__version__} ({keras.backend.backend()} backend), model.layers in order",
            "include_top": counts[True],
            "notop": {**counts[False], "note": f"include_top=False is the first {n} layers below"},
            "preprocess_input_mode": modes[family],
            "batchnorm": batchnorm[family],
            "weight_order": "each layer's 'weights' lists layer.weights in Keras' order "
            "(Keras' legacy .h5 writer stores trainable then non-trainable weights; "
            "the same order for these models)",
        }
        dump_manifest(OUT / f"manifest_{stem}.json", head, recs[True])
        print(stem, counts)
    return batchnorm


# ------------------------------------------------ step 1c: small models, Keras 3


def preprocess(family, x_raw):
    return getattr(keras.applications, family).preprocess_input(x_raw.copy())


def init_weights(model, rng, x):
    """He-normal kernels, N(0, 0.1) biases, Dense kernels scaled to keep the softmax
    unsaturated; BatchNorm gamma U(0.5, 2.5), beta N(0.3, 0.7), and moving statistics
    near the batch statistics of x but deliberately off (mean + 0.3 std N(0,1),
    var x U(0.5, 2)), set layer by layer in model order."""
    for layer in model.layers:
        cls = layer.__class__.__name__
        if cls in ("Conv2D", "DepthwiseConv2D", "Dense"):
            for w in layer.weights:
                shape = tuple(w.shape)
                if len(shape) == 1:
                    w.assign(rng.normal(0, 0.1, shape).astype("float32"))
                else:
                    fan_in = np.prod(shape[:-1]) if cls != "DepthwiseConv2D" else np.prod(shape[:2])
                    scale = np.sqrt(2 / fan_in) * (0.3 if cls == "Dense" else 1.0)
                    w.assign((rng.normal(0, 1, shape) * scale).astype("float32"))
        elif cls == "BatchNormalization":
            probe = keras.Model(model.input, layer.input)
            a = to_numpy(probe(x, training=False)).astype(np.float64)
            mean, std = a.mean(axis=(0, 1, 2)), a.std(axis=(0, 1, 2))
            c = mean.shape[0]
            values = {
                "gamma": rng.uniform(0.5, 2.5, c),
                "beta": rng.normal(0.3, 0.7, c),
                "moving_mean": mean + 0.3 * std * rng.normal(0, 1, c),
                "moving_variance": std**2 * rng.uniform(0.5, 2.0, c),
            }
            for w in layer.weights:
                w.assign(values[w.name].astype("float32"))


def watched_layers(model):
    """Layer outputs kept in the npz: the first BatchNormalization, each Add, Concatenate and
    pool, and the model's output."""
    bns = [l.name for l in model.layers if l.__class__.__name__ == "BatchNormalization"]
    keep = ("Add", "Concatenate", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D")
    names = bns[:1] + [l.name for l in model.layers if l.__class__.__name__ in keep]
    if model.layers[-1].name not in names:
        names.append(model.layers[-1].name)
    return names


def run_keras3(model, x, loss_w, training):
    """One call of the model: watched outputs, sum(output * loss_w), gradients by autograd."""
    import torch

    names = watched_layers(model)
    tap = keras.Model(model.input, [model.get_layer(n).output for n in names])
    xt = torch.tensor(x)
    outs = tap(xt, training=training)
    loss = (outs[-1] * torch.tensor(loss_w)).sum()
    params = model.trainable_weights
    grads = torch.autograd.grad(loss, [p.value for p in params])
    res = {f"{n}": to_numpy(o.detach()) for n, o in zip(names, outs)}
    res["loss"] = np.float32(loss.detach().numpy())
    for p, g in zip(params, grads):
        res[f"grad.{p.path.split('/')[-2]}.{p.name}"] = g.numpy()
    return res


def margins(model, x, training):
    """Smallest distance of a ReLU / ReLU6 input to its kink, relative to the tensor's max |value|."""
    out = {}
    acts = [
        l
        for l in model.layers
        if l.__class__.__name__ == "ReLU"
        or (l.__class__.__name__ == "Activation" and l.get_config()["activation"] == "relu")
    ]
    tap = keras.Model(model.input, [l.input for l in acts])
    vals = tap(x, training=training)
    if not isinstance(vals, (list, tuple)):
        vals = [vals]
    # the training-mode tap call updated moving statistics; callers restore them
    worst, above6 = np.inf, 0
    for l, v in zip(acts, vals):
        v = to_numpy(v)
        kinks = [0.0] + ([float(l.get_config()["max_value"])] if l.__class__.__name__ == "ReLU" else [])
        d = min(np.abs(v - k).min() for k in kinks) / np.abs(v).max()
        worst = min(worst, d)
        if len(kinks) == 2:
            above6 += int((v > kinks[1]).sum())
    out["min_kink_distance_rel"] = float(worst)
    out["relu6_inputs_above_6"] = above6
    return out


MIN_KINK_MARGIN = 3e-6


def draw(name, seed):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    size, family = MINI[name][1:]
    model = build_mini(name)
    x_raw = rng.integers(0, 256, (N_IMAGES, size, size, 3)).astype("float32")
    x = np.ascontiguousarray(preprocess(family, x_raw), np.float32)
    init_weights(model, rng, x)
    return model, rng, x_raw, x


def keras3_minis():
    """Seeds are tried from MINI's seed upwards until every ReLU / ReLU6 input is at least
    MIN_KINK_MARGIN (relative) away from its kink in both modes, so that float32 round-off
    cannot flip a mask and change the gradients."""
    for name, (first_seed, size, family) in MINI.items():
        for seed in range(first_seed, first_seed + 40):
            model, rng, x_raw, x = draw(name, seed)
            initial = [to_numpy(w).copy() for w in model.weights]
            info = {"inference": margins(model, x, False), "training": margins(model, x, True)}
            for w, v in zip(model.weights, initial):
                w.assign(v)
            if min(m["min_kink_distance_rel"] for m in info.values()) >= MIN_KINK_MARGIN:
                break
        else:
            raise RuntimeError(f"{name}: no seed gave kink margins >= {MIN_KINK_MARGIN}")
        out_shape = (N_IMAGES,) + tuple(model.output.shape[1:])
        loss_w = rng.normal(0, 1, out_shape).astype("float32")
        # the weight files hold the weights before any training-mode call
        with h5py.File(OUT / f"{name}.keras3_legacy.h5", "w") as f:
            from keras.src.legacy.saving import legacy_h5_format

            legacy_h5_format.save_weights_to_hdf5_group(f, model)
        model.save_weights(OUT / f"{name}.weights.h5")
        data = {"x_raw": x_raw.astype(np.uint8), "x": x, "loss_weights": loss_w}
        for k, v in run_keras3(model, x, loss_w, False).items():
            data[f"inference.{k}"] = v
        for k, v in run_keras3(model, x, loss_w, True).items():
            data[f"training.{k}"] = v
        for layer in model.layers:
            if layer.__class__.__name__ == "BatchNormalization":
                data[f"training.moving_mean.{layer.name}"] = to_numpy(layer.moving_mean)
                data[f"training.moving_variance.{layer.name}"] = to_numpy(layer.moving_variance)
        for w, v in zip(model.weights, initial):
            w.assign(v)
        np.savez_compressed(OUT / f"{name}.npz", **data)
        keras.backend.clear_session()
        recs = [layer_record(layer) for layer in model.layers]
        (OUT / f"{name}.layers.tmp.json").write_text(
            json.dumps(
                {
                    "seed": seed,
                    "input": [N_IMAGES, size, size, 3],
                    "preprocess": family,
                    "count_params": int(model.count_params()),
                    "margins": info,
                    "layers": recs,
                }
            )
        )
        print(name, "params", model.count_params(), "loss", data["inference.loss"], data["training.loss"], info)


def step_keras3():
    OUT.mkdir(parents=True, exist_ok=True)
    entries, alphas, rows_all, modes = weight_file_table()
    batchnorm = full_manifests(modes)
    table = {
        "about": "Keras' published ImageNet weight files for VGG19, ResNet50, InceptionV3 and MobileNetV2, "
        f"with URL and md5 (the file_hash passed to get_file) as given in keras {keras.__version__}'s "
        "keras/src/applications/*.py. 'bytes' is null: the source gives no sizes. 'md5' is null "
        "where the source gives no hash (MobileNetV2).",
        "keras_version": keras.__version__,
        "mobilenet_v2_grid": {
            "alpha": alphas,
            "rows": rows_all,
            "default": "mobilenet_v2_1.0_224 (alpha 1.0, 224x224)",
        },
        "aliases": {"mobilenet_v2": "mobilenet_v2_1.0_224", "mobilenet_v2-notop": "mobilenet_v2_1.0_224-notop"},
        "models": {k: {"preprocess_input_mode": modes[k], "batchnorm": batchnorm.get(k)} for k in modes},
        "files": entries,
    }
    text = json.dumps(table, indent=1)
    (OUT / "keras_weight_files.json").write_text(text + "\n")
    keras3_minis()


# ------------------------------------------------ step 2: Keras 2 writer (tf_keras)


def read_legacy(path):
    """{layer name: [arrays]} from a legacy .h5, in weight_names order."""
    out = {}
    with h5py.File(path, "r") as f:
        for n in f.attrs["layer_names"]:
            n = n.decode() if isinstance(n, bytes) else n
            g = f[n]
            names = [w.decode() if isinstance(w, bytes) else w for w in g.attrs["weight_names"]]
            out[n] = [np.asarray(g[w]) for w in names]
    return out


def step_keras2():
    report = {}
    for name in MINI:
        model = build_mini(name)
        arrays = read_legacy(OUT / f"{name}.keras3_legacy.h5")
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(arrays[layer.name])  # same names: clear_session reset the counters
        data = np.load(OUT / f"{name}.npz")
        y = np.asarray(model(data["x"], training=False))
        ref = data[f"inference.{model.layers[-1].name}"]
        rel = float(np.abs(y - ref).max() / np.abs(ref).max())
        model.save_weights(str(OUT / f"{name}.keras2.h5"))
        report[name] = {"tf_keras_vs_keras3_inference_rel": rel}
        print(name, "tf_keras output vs Keras 3 (torch) output: max|diff|/max|ref| =", rel)
    import tensorflow as tf

    report["versions"] = {
        "tf_keras": keras.__version__,
        "tensorflow": tf.__version__,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
    }
    (OUT / "keras2.tmp.json").write_text(json.dumps(report))


# ------------------------------------------------ step 3: reload checks, manifest


def step_check():
    import torch

    k2 = json.loads((OUT / "keras2.tmp.json").read_text())
    fixtures = {}
    for name in MINI:
        info = json.loads((OUT / f"{name}.layers.tmp.json").read_text())
        data = np.load(OUT / f"{name}.npz")
        last = info["layers"][-1]["name"]
        reload = {}
        for layout in LAYOUTS:
            model = build_mini(name)
            model.load_weights(OUT / f"{name}.{layout}")
            y = to_numpy(model(data["x"], training=False))
            diffs = [np.abs(y - data[f"inference.{last}"]).max()]
            y = to_numpy(model(data["x"], training=True))
            diffs.append(np.abs(y - data[f"training.{last}"]).max())
            for layer in model.layers:
                if layer.__class__.__name__ == "BatchNormalization":
                    for stat in ("moving_mean", "moving_variance"):
                        ref = data[f"training.{stat}.{layer.name}"]
                        diffs.append(np.abs(to_numpy(getattr(layer, stat)) - ref).max())
            reload[layout] = float(max(diffs))
        fixtures[name] = {
            **{k: info[k] for k in ("seed", "input", "preprocess", "count_params")},
            "output": last,
            "keras3_reload_max_abs_diff": reload,
            "keras3_reload_checks": "load_weights into a fresh model; the output in inference mode, the output "
            "in training mode and the moving statistics after it, against the npz",
            "tf_keras_vs_keras3_inference_rel": k2[name]["tf_keras_vs_keras3_inference_rel"],
            "relu_margins": info["margins"],
            "files": {},
            "npz": {k: list(data[k].shape) for k in data.files},
            "layers": info["layers"],
        }
        print(name, "reload max|diff|", reload)
    keras.backend.clear_session()
    # 'same' average pooling divides by the number of real (unpadded) cells
    pooled = to_numpy(keras.layers.AveragePooling2D(3, strides=1, padding="same")(np.ones((1, 3, 3, 1), "float32")))
    files = {}
    for p in sorted(OUT.iterdir()):
        if (
            p.suffix in (".h5", ".npz", ".json")
            and not p.name.endswith(".tmp.json")
            and p.name != "fixtures_manifest.json"
        ):
            files[p.name] = {"bytes": p.stat().st_size, "md5": md5(p)}
    manifest = {
        "versions": {
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "torch": torch.__version__,
            "h5py": h5py.__version__,
            "numpy": np.__version__,
            "keras2_writer": k2["versions"],
        },
        "layouts": list(LAYOUTS),
        "average_pooling_same_of_ones_3x3": pooled[0, :, :, 0].tolist(),
        "files": files,
        "fixtures": fixtures,
    }
    (OUT / "fixtures_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


{"keras3": step_keras3, "keras2": step_keras2, "check": step_check}[MODE]()
