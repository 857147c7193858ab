"""What ResNet50, InceptionV3 and MobileNetV2 share: a `Module` whose ``forward`` is
plain Python over its layers, laid out in Keras' ``model.layers`` order.

Keras lists a model's layers, and writes them into its weight files, in the order of
its graph (``keras.src.ops.function.map_graph``): farthest from the output first, and
among layers as far from the output, in the order a depth-first walk from the output
meets them. That is not the order the layers are created in: in a ResNet block the
shortcut's ``_0_conv`` comes after ``_2_relu``, and InceptionV3 interleaves its branches.
A `Backbone` runs its ``forward`` once on a small input, records which layer feeds
which, and sorts its layers into that order, so that ``layers()``, ``save_weights`` and
loading by order agree with Keras' files. Nothing else depends on the recording:
``forward`` is the model.
"""
import numpy as np

from minitl import functional as F
from minitl.backend import device_of, to_device
from minitl.errors import ShapeError
from minitl.nn import Dense, GlobalAvgPool2D, GlobalMaxPool2D, Module
from minitl.tensor import Tensor, no_grad

__all__ = ["Backbone", "multiply_adds", "record_graph", "sort_like_keras"]


class Backbone(Module):
    """Base of the branching backbones. A subclass sets ``MIN_SIZE``, ``PREPROCESSING``,
    ``BLOCKS`` (its named blocks in input order, each a tuple of layer-name prefixes) and
    writes ``features(x)``; the base adds Keras' top (``include_top``, ``pooling``,
    ``classes``, ``classifier_activation``) and the Keras layer order.
    """

    MIN_SIZE = 32
    PREPROCESSING = "caffe"
    BLOCKS = ()

    def __init__(self, name, input_shape, include_top, pooling, classifier_activation):
        super().__init__(name)
        self.check_input_shape(input_shape)
        if include_top and pooling is not None:
            raise ValueError("pooling applies only with include_top=False")
        if pooling not in (None, "avg", "max"):
            raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
        if classifier_activation not in (None, "softmax"):
            raise ValueError(f"classifier_activation must be 'softmax' or None, got {classifier_activation!r}")
        self.input_shape = tuple(input_shape)
        self.include_top, self.pooling = include_top, pooling
        self.classifier_activation = classifier_activation if include_top else None
        self._shapes = {}

    def add_top(self, classes, kernel_initializer, pool_names=("avg_pool", "avg_pool", "max_pool")):
        """Keras' top: global average pooling and ``predictions``; without it, the optional
        global pooling. ``pool_names``: the names Keras gives those pooling layers (with the
        top, 'avg', 'max'); None for an automatic name."""
        top, avg, mx = pool_names
        if self.include_top:
            self.avg_pool = GlobalAvgPool2D(name=top)
            self.predictions = Dense(classes, kernel_initializer=kernel_initializer, name="predictions")
        elif self.pooling == "avg":
            self.pool = GlobalAvgPool2D(name=avg)
        elif self.pooling == "max":
            self.pool = GlobalMaxPool2D(name=mx)

    def finish(self, weights=None):
        """Create the weights (one forward pass on a small input), sort the layers into
        Keras' order, and load ``weights`` (a path) when given."""
        sort_like_keras(self, (1, self.MIN_SIZE, self.MIN_SIZE, self.input_shape[2]))
        if weights is not None:
            from minitl.io import load_weights
            load_weights(self, weights)

    # ---- the network ------------------------------------------------------------
    def features(self, x):
        raise NotImplementedError

    def logits(self, x):
        """The network's output before the final softmax."""
        x = self.features(x)
        if self.include_top:
            return self.predictions(self.avg_pool(x))
        return self.pool(x) if self.pooling else x

    def forward(self, x):
        y = self.logits(x)
        return F.softmax(y) if self.classifier_activation == "softmax" else y

    # ---- what transfer learning asks of a backbone --------------------------------
    @classmethod
    def check_input_shape(cls, input_shape, given=None):
        """ShapeError unless an (H, W, C) input is at least ``MIN_SIZE`` pixels high and wide."""
        h, w = input_shape[:2]
        if h < cls.MIN_SIZE or w < cls.MIN_SIZE:
            given = given or f"input_shape {tuple(input_shape)}"
            raise ShapeError(f"{cls.__name__} needs inputs of at least {cls.MIN_SIZE}x{cls.MIN_SIZE} pixels: "
                             f"{given} is too small")

    def blocks(self):
        """The named blocks in input order: {'conv1': [conv1_conv, conv1_bn, ...], ...}; a layer
        belongs to the first block one of whose prefixes its name starts with. Transfer
        learning freezes and unfreezes whole blocks by these names."""
        out = {name: [] for name, _ in self.BLOCKS}
        for layer in self.layers():
            for name, prefixes in self.BLOCKS:
                if layer.name.startswith(prefixes):
                    out[name].append(layer)
                    break
        return out

    # ---- shapes -----------------------------------------------------------------
    def layer_shapes(self, input_shape):
        """[(layer, output shape)] in ``layers()`` order for inputs of ``input_shape``
        ((None, H, W, C)), from one forward pass of a single zero image."""
        key = tuple(input_shape[1:])
        if key not in self._shapes:
            self.check_input_shape(key)
            graph = record_graph(self, (1, *key))
            self._shapes[key] = [(layer, (None, *graph[id(layer)][1][1:])) for layer in self.layers()]
        return self._shapes[key]

    def output_shape(self, input_shape):
        return self.layer_shapes(input_shape)[-1][1]

    def build(self, input_shape):
        return self.output_shape((None, *input_shape))


def record_graph(model, shape, run=None):
    """{id(layer): (ids of the layers feeding it, its output shape, call rank)} from one pass
    of ``run`` (``model.logits`` by default) over zeros of ``shape`` in inference mode; the
    model input feeds as None. ShapeError when a layer's input or the output was made by no
    layer (an op that ``run`` applies outside the layers)."""
    layers = model.layers()
    made_by, graph, keep = {}, {}, []

    def watch(layer):
        forward = layer.forward

        def recorded(x):
            inputs = x if isinstance(x, (list, tuple)) else [x]
            unknown = [t for t in inputs if id(t) not in made_by]
            if unknown:
                raise ShapeError(f"{model.name}: the input of layer {layer.name} is made outside the model's "
                                 f"layers")
            y = forward(x)
            keep.extend(inputs)
            keep.append(y)
            graph[id(layer)] = ([made_by[id(t)] for t in inputs], tuple(y.shape), len(graph))
            made_by[id(y)] = id(layer)
            return y
        return recorded

    modes = [m.training for m in model.modules()]
    model.eval()
    for layer in layers:
        layer.forward = watch(layer)
    try:
        with no_grad():
            device = device_of(params[0].data) if (params := model.parameters()) else "cpu"
            x = Tensor(to_device(np.zeros(shape, np.float32), device))
            keep.append(x)
            made_by[id(x)] = None
            out = (run or model.logits)(x)
    finally:
        for layer in layers:
            del layer.__dict__["forward"]
        for m, mode in zip(model.modules(), modes):
            m.training = mode
    missing = [layer.name for layer in layers if id(layer) not in graph]
    if missing:
        raise ShapeError(f"{model.name}: forward never calls the layers {', '.join(missing)}")
    if made_by.get(id(out)) is None:
        raise ShapeError(f"{model.name}: its output is made outside its layers")
    graph["output"] = made_by[id(out)]
    return graph


def sort_like_keras(model, shape):
    """Reorder the model's layers (and the blocks that hold them) into Keras' model.layers order."""
    graph = record_graph(model, shape)
    rank, post_order = {}, []

    def visit(key):  # Keras' _build_map: numbered on first visit, listed when finished
        if key in rank:
            return
        rank[key] = len(rank)
        for parent in graph[key][0]:
            if parent is not None:
                visit(parent)
        post_order.append(key)

    visit(graph["output"])
    depth = {}
    for key in reversed(post_order):  # longest path to the output
        d = depth.setdefault(key, 0)
        for parent in graph[key][0]:
            if parent is not None:
                depth[parent] = max(depth.get(parent, 0), d + 1)
    position = {key: i for i, key in enumerate(sorted(post_order, key=lambda k: (-depth[k], rank[k])))}

    def first(module):
        if not module._modules:
            return position[id(module)]
        order = sorted(module._modules.items(), key=lambda kv: first(kv[1]))
        module._modules.clear()
        module._modules.update(order)
        return first(order[0][1])

    first(model)
    if [position[id(layer)] for layer in model.layers()] != sorted(position.values()):
        raise ShapeError(f"{model.name}: a block's layers are not consecutive in Keras' order")


def multiply_adds(model, input_shape=(224, 224, 3)):
    """Multiply-adds of one forward pass of one image: for each convolution (depthwise too),
    Ho·Wo·kh·kw·C_in·C_out (its kernel's size times its output positions); for each dense
    layer, in·out. Pooling, batch normalization, activations and additions are not counted."""
    total = 0
    for layer, shape in model.layer_shapes((None, *input_shape)):
        kernel = layer._params.get("kernel")  # Conv2D, DepthwiseConv2D and Dense
        if kernel is None:
            continue
        positions = shape[1] * shape[2] if len(shape) == 4 else 1
        total += positions * kernel.size
    return total

