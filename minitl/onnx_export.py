"""A minitl model as an ONNX graph, built with the ``onnx`` package's helper API.

The model is traced once (`minitl.applications.backbone.record_graph`: which layer feeds
which, and each output's shape), and each layer becomes ONNX ops: Conv2D → Conv (its HWIO
kernel as OIHW), DepthwiseConv2D → Conv with one group per channel, BatchNormalization →
BatchNormalization (inference, the moving statistics), pooling → MaxPool / AveragePool
(padding not counted) / GlobalAveragePool, ZeroPadding2D → Pad, ReLU → Relu, ReLU6 → Clip,
Add → Add, Concatenate → Concat, Flatten → Transpose to (h, w, c) order and Flatten,
Dense → Gemm, Dropout → Identity; a Softmax gives the probabilities. A layer of another
kind is refused.

The graph takes what minitl takes, (N, H, W, 3) float32 channels-last with the batch
dynamic, and transposes it to ONNX's (N, C, H, W) once; with ``preprocessing`` ('caffe' or
'tf') it takes uint8 RGB images instead and applies Keras' ``preprocess_input`` first.
"""
import numpy as np

from minitl import functional as F
from minitl.applications.backbone import record_graph
from minitl.applications.imagenet_utils import MEAN_BGR
from minitl.backend import to_numpy
from minitl.conv import _pair, resolve_padding
from minitl.errors import WeightsError
from minitl.nn import (
    Add,
    AvgPool2D,
    BatchNormalization,
    Concatenate,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    MaxPool2D,
    ReLU,
    ZeroPadding2D,
)

__all__ = ["INPUT", "OPSET", "OUTPUT", "to_onnx"]

OPSET = 17
IR_VERSION = 8  # the IR of opset 17: ONNX Runtime 1.13 and later read it
INPUT, OUTPUT = "images", "probabilities"
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]
NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}  # an NHWC axis -> the same axis of the NCHW tensor
ACTIVATIONS = {F.relu: "Relu", F.sigmoid: "Sigmoid", F.tanh: "Tanh", F.softmax: "Softmax"}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise WeightsError("ONNX export needs the onnx package: pip install onnx (or minitl's extra, "
                           "pip install 'minitl[onnx]')") from None
    return onnx


class Graph:
    """The nodes and initializers of the graph being built; tensors are named by layer."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers = onnx, [], []

    def const(self, name, array, dtype=np.float32):
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(to_numpy(array), dtype), name))
        return name

    def node(self, op, inputs, output, **attributes):
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def _activated(g, layer, op, inputs, out, rank, **attributes):
    """The node ``op`` followed by the layer's activation (if any), the last named ``out``."""
    if layer.activation is None:
        return g.node(op, inputs, out, **attributes)
    if layer.activation not in ACTIVATIONS:
        raise WeightsError(f"layer {layer.name}: its activation {layer.activation.__name__} has no ONNX mapping "
                           f"in minitl")
    y = g.node(op, inputs, f"{layer.name}/linear", **attributes)
    activation = ACTIVATIONS[layer.activation]
    return g.node(activation, [y], out, **({"axis": 1 if rank == 4 else -1} if activation == "Softmax" else {}))


def _conv(g, layer, xs, shape, out):
    kh, kw = layer.kernel_size
    strides = _pair(layer.strides, "strides")
    top, bottom, left, right = resolve_padding(layer.padding, shape[1:3], (kh, kw), strides)
    w = to_numpy(layer.kernel.data)
    if isinstance(layer, DepthwiseConv2D):  # output channel c·M + m is W[:, :, c, m]: group c's m-th filter
        channels, m = w.shape[2:]
        w, group = w.transpose(2, 3, 0, 1).reshape(channels * m, 1, kh, kw), channels
    else:
        w, group = w.transpose(3, 2, 0, 1), 1
    inputs = [xs[0], g.const(f"{layer.name}/kernel", w)]
    if layer.use_bias:
        inputs.append(g.const(f"{layer.name}/bias", layer.bias.data))
    return _activated(g, layer, "Conv", inputs, out, 4, kernel_shape=[kh, kw], strides=list(strides),
                      pads=[top, left, bottom, right], group=group)


def _dense(g, layer, xs, shape, out):
    inputs = [xs[0], g.const(f"{layer.name}/kernel", layer.kernel.data)]
    if layer.use_bias:
        return _activated(g, layer, "Gemm", inputs + [g.const(f"{layer.name}/bias", layer.bias.data)], out, 2)
    return _activated(g, layer, "MatMul", inputs, out, 2)


def _batch_norm(g, layer, xs, shape, out):
    if layer.axis % len(shape) != len(shape) - 1:
        raise WeightsError(f"layer {layer.name}: ONNX export takes batch normalization over the channels "
                           f"(axis -1), not axis {layer.axis}")
    mean = to_numpy(layer.moving_mean.data)
    gamma = layer.gamma.data if layer.scale else np.ones_like(mean)
    beta = layer.beta.data if layer.center else np.zeros_like(mean)
    inputs = [xs[0]] + [g.const(f"{layer.name}/{key}", value) for key, value in
                        (("gamma", gamma), ("beta", beta), ("moving_mean", mean),
                         ("moving_variance", layer.moving_variance.data))]
    return g.node("BatchNormalization", inputs, out, epsilon=float(layer.epsilon))


def _pool(g, layer, xs, shape, out):
    pool = _pair(layer.pool_size, "pool")
    strides = pool if layer.strides is None else _pair(layer.strides, "strides")
    top, bottom, left, right = resolve_padding(layer.padding, shape[1:3], pool, strides)
    options = {"kernel_shape": list(pool), "strides": list(strides), "pads": [top, left, bottom, right]}
    if isinstance(layer, AvgPool2D):
        return g.node("AveragePool", xs, out, count_include_pad=0, **options)
    return g.node("MaxPool", xs, out, **options)


def _global_pool(g, layer, xs, shape, out):
    op = "GlobalAveragePool" if isinstance(layer, GlobalAvgPool2D) else "GlobalMaxPool"
    return g.node("Flatten", [g.node(op, xs, f"{layer.name}/pool")], out, axis=1)


def _flatten(g, layer, xs, shape, out):
    if len(shape) != 4:
        raise WeightsError(f"layer {layer.name}: ONNX export flattens (N, H, W, C) maps, not shape {shape}")
    return g.node("Flatten", [g.node("Transpose", xs, f"{layer.name}/nhwc", perm=TO_NHWC)], out, axis=1)


def _relu(g, layer, xs, shape, out):
    if layer.max_value is None:
        return g.node("Relu", xs, out)
    return g.node("Clip", [xs[0], g.const(f"{layer.name}/min", 0.0), g.const(f"{layer.name}/max", layer.max_value)],
                  out)


def _zero_padding(g, layer, xs, shape, out):
    top, bottom, left, right = layer.padding
    return g.node("Pad", [xs[0], g.const(f"{layer.name}/pads", [0, 0, top, left, 0, 0, bottom, right], np.int64)],
                  out)


def _add(g, layer, xs, shape, out):
    y = xs[0]
    for i, x in enumerate(xs[1:], start=1):  # Add's order: ((x0 + x1) + x2) ...
        y = g.node("Add", [y, x], out if i == len(xs) - 1 else f"{layer.name}/sum{i}")
    return y


def _concatenate(g, layer, xs, shape, out):
    axis = layer.axis % len(shape)
    return g.node("Concat", xs, out, axis=NCHW_AXIS[axis] if len(shape) == 4 else axis)


def _dropout(g, layer, xs, shape, out):
    return g.node("Identity", xs, out)  # inference: the identity


CONVERTERS = {Conv2D: _conv, DepthwiseConv2D: _conv, Dense: _dense, BatchNormalization: _batch_norm,
              MaxPool2D: _pool, AvgPool2D: _pool, GlobalAvgPool2D: _global_pool, GlobalMaxPool2D: _global_pool,
              Flatten: _flatten, ReLU: _relu, ZeroPadding2D: _zero_padding, Add: _add, Concatenate: _concatenate,
              Dropout: _dropout}


def _preprocess(g, mode):
    """uint8 RGB (N, H, W, 3) -> Keras' preprocess_input of ``mode``, in float32, as minitl computes it."""
    x = g.node("Cast", [INPUT], "images/float", to=g.onnx.TensorProto.FLOAT)
    if mode == "caffe":  # RGB -> BGR, minus the ImageNet mean
        bgr = g.node("Gather", [x, g.const("images/bgr", [2, 1, 0], np.int64)], "images/bgr_order", axis=3)
        return g.node("Sub", [bgr, g.const("images/mean_bgr", MEAN_BGR)], "images/preprocessed")
    if mode == "tf":  # x / 127.5 - 1
        x = g.node("Div", [x, g.const("images/127.5", 127.5)], "images/scaled")
        return g.node("Sub", [x, g.const("images/one", 1.0)], "images/preprocessed")
    raise WeightsError(f"preprocessing must be 'caffe', 'tf' or None, got {mode!r}")


def to_onnx(model, input_shape, preprocessing=None, metadata=None, name="minitl"):
    """The model (any minitl model whose forward calls only its layers) as an onnx.ModelProto
    of opset `OPSET`: input `INPUT` (N, H, W, C) float32 for ``input_shape`` (H, W, C), or
    uint8 RGB with ``preprocessing`` ('caffe' or 'tf') applied in the graph; output
    `OUTPUT`, the softmax of the model's output. ``metadata``: {key: text} stored in the
    model. onnx.checker has checked it. WeightsError for a layer with no ONNX mapping here,
    or without the onnx package."""
    onnx = _onnx()
    helper = onnx.helper
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise WeightsError(f"ONNX export takes models of images, input_shape (H, W, C), not {input_shape}")
    graph = record_graph(model, (1, *input_shape), run=model)
    g = Graph(onnx)
    x = _preprocess(g, preprocessing) if preprocessing else INPUT
    names = {None: g.node("Transpose", [x], "images/nchw", perm=TO_NCHW)}
    shapes = {None: (1, *input_shape)}
    layers = sorted(model.layers(), key=lambda layer: graph[id(layer)][2])  # in call order
    for layer in layers:
        convert = CONVERTERS.get(type(layer))
        if convert is None:
            raise WeightsError(f"layer {layer.name} ({type(layer).__name__}) has no ONNX mapping in minitl")
        parents, shape, _ = graph[id(layer)]
        names[id(layer)] = convert(g, layer, [names[p] for p in parents], shapes[parents[0]], layer.name)
        shapes[id(layer)] = shape
    last = graph["output"]
    if len(shapes[last]) != 2:
        raise WeightsError(f"the model's output has shape {shapes[last]}; ONNX export takes models that end in "
                           f"(N, classes)")
    g.node("Softmax", [names[last]], OUTPUT, axis=-1)
    dtype = onnx.TensorProto.UINT8 if preprocessing else onnx.TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(INPUT, dtype, ["batch", *input_shape])]
    outputs = [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["batch", shapes[last][1]])]
    proto = helper.make_model(helper.make_graph(g.nodes, name, inputs, outputs, g.initializers),
                              opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="minitl")
    helper.set_model_props(proto, dict(metadata or {}))
    onnx.checker.check_model(proto, full_check=True)
    return proto
