"""InceptionV3 (Szegedy et al., 2015) as ``keras.applications.InceptionV3`` builds it, with
Keras' layer names and weight order, and its input preprocessing and label decoding, as in
`keras.applications.inception_v3`.

Every convolution is ``conv2d_bn``: a convolution without bias, batch normalization
without gamma (``scale=False``) and a ReLU, named automatically as Keras names them
(``conv2d_5``, ``batch_normalization_5``, ``activation_5``), in the order Keras' code
creates them. The stem (five of those and two max-pools) is followed by eleven blocks,
each a few parallel branches whose outputs are joined along the channels:
``mixed0``–``mixed2`` (35×35), ``mixed3`` (a reduction to 17×17), ``mixed4``–``mixed7``
(factorised 7×7), ``mixed8`` (a reduction to 8×8) and ``mixed9``, ``mixed10``.
"""

from minitl.applications.backbone import Backbone
from minitl.applications.imagenet_utils import decode_predictions, load_class_index, preprocess_tf
from minitl.nn import AvgPool2D, BatchNormalization, Concatenate, Conv2D, MaxPool2D, Module, ReLU

__all__ = ["InceptionV3", "decode_predictions", "load_class_index", "preprocess_input"]


class Names:
    """Keras' automatic names: conv2d, conv2d_1, ... per layer kind, in creation order."""

    def __init__(self):
        self.count = {}

    def __call__(self, kind):
        k = self.count.get(kind, 0)
        self.count[kind] = k + 1
        return kind if k == 0 else f"{kind}_{k}"


class InceptionBlock(Module):
    """Holds the layers of one block; ``unit`` makes a conv2d_bn (convolution, BN, ReLU)."""

    def __init__(self, name, names, width, kernel_initializer):
        super().__init__(name)
        self.names, self.width, self.kernel_initializer = names, width, kernel_initializer

    def unit(self, filters, rows, cols, strides=1, padding="same"):
        conv = Conv2D(max(1, round(filters * self.width)), (rows, cols), strides=strides, padding=padding,
                      use_bias=False, kernel_initializer=self.kernel_initializer, name=self.names("conv2d"))
        bn = BatchNormalization(scale=False, name=self.names("batch_normalization"))
        relu = ReLU(name=self.names("activation"))
        for layer in (conv, bn, relu):
            setattr(self, layer.name, layer)
        return conv, bn, relu


def conv_bn(unit, x):
    """A conv2d_bn unit: relu(batch_norm(conv(x)))."""
    conv, bn, relu = unit
    return relu(bn(conv(x)))


class Stem(InceptionBlock):
    """299×299×3 -> 35×35×192: 3×3/2, 3×3, 3×3 'same', max-pool, 1×1, 3×3, max-pool."""

    def __init__(self, *args):
        super().__init__("stem", *args)
        self.units = [self.unit(32, 3, 3, 2, "valid"), self.unit(32, 3, 3, padding="valid"), self.unit(64, 3, 3)]
        self.pool1 = MaxPool2D(3, 2, name=self.names("max_pooling2d"))
        self.units2 = [self.unit(80, 1, 1, padding="valid"), self.unit(192, 3, 3, padding="valid")]
        self.pool2 = MaxPool2D(3, 2, name=self.names("max_pooling2d"))

    def forward(self, x):
        for unit in self.units:
            x = conv_bn(unit, x)
        x = self.pool1(x)
        for unit in self.units2:
            x = conv_bn(unit, x)
        return self.pool2(x)


class BlockA(InceptionBlock):
    """mixed0-2: 1×1 | 1×1 -> 5×5 | 1×1 -> 3×3 -> 3×3 | 3×3 average pool -> 1×1."""

    def __init__(self, name, pool_filters, *args):
        super().__init__(f"{name}_block", *args)
        self.branch1x1 = self.unit(64, 1, 1)
        self.branch5x5 = [self.unit(48, 1, 1), self.unit(64, 5, 5)]
        self.branch3x3dbl = [self.unit(64, 1, 1), self.unit(96, 3, 3), self.unit(96, 3, 3)]
        self.pool = AvgPool2D(3, 1, padding="same", name=self.names("average_pooling2d"))
        self.branch_pool = self.unit(pool_filters, 1, 1)
        self.join = Concatenate(axis=3, name=name)

    def forward(self, x):
        b1 = conv_bn(self.branch1x1, x)
        b5 = conv_bn(self.branch5x5[1], conv_bn(self.branch5x5[0], x))
        b3 = x
        for unit in self.branch3x3dbl:
            b3 = conv_bn(unit, b3)
        bp = conv_bn(self.branch_pool, self.pool(x))
        return self.join([b1, b5, b3, bp])


class BlockB(InceptionBlock):
    """mixed3, 35×35 -> 17×17: 3×3/2 | 1×1 -> 3×3 -> 3×3/2 | 3×3/2 max-pool."""

    def __init__(self, name, *args):
        super().__init__(f"{name}_block", *args)
        self.branch3x3 = self.unit(384, 3, 3, 2, "valid")
        self.branch3x3dbl = [self.unit(64, 1, 1), self.unit(96, 3, 3), self.unit(96, 3, 3, 2, "valid")]
        self.pool = MaxPool2D(3, 2, name=self.names("max_pooling2d"))
        self.join = Concatenate(axis=3, name=name)

    def forward(self, x):
        b3 = conv_bn(self.branch3x3, x)
        bd = x
        for unit in self.branch3x3dbl:
            bd = conv_bn(unit, bd)
        return self.join([b3, bd, self.pool(x)])


class BlockC(InceptionBlock):
    """mixed4-7: 1×1 | 1×1 -> 1×7 -> 7×1 | 1×1 -> 7×1 -> 1×7 -> 7×1 -> 1×7 | average pool -> 1×1."""

    def __init__(self, name, c, *args):
        super().__init__(f"{name}_block", *args)
        self.branch1x1 = self.unit(192, 1, 1)
        self.branch7x7 = [self.unit(c, 1, 1), self.unit(c, 1, 7), self.unit(192, 7, 1)]
        self.branch7x7dbl = [self.unit(c, 1, 1), self.unit(c, 7, 1), self.unit(c, 1, 7), self.unit(c, 7, 1),
                             self.unit(192, 1, 7)]
        self.pool = AvgPool2D(3, 1, padding="same", name=self.names("average_pooling2d"))
        self.branch_pool = self.unit(192, 1, 1)
        self.join = Concatenate(axis=3, name=name)

    def forward(self, x):
        b1 = conv_bn(self.branch1x1, x)
        b7, bd = x, x
        for unit in self.branch7x7:
            b7 = conv_bn(unit, b7)
        for unit in self.branch7x7dbl:
            bd = conv_bn(unit, bd)
        bp = conv_bn(self.branch_pool, self.pool(x))
        return self.join([b1, b7, bd, bp])


class BlockD(InceptionBlock):
    """mixed8, 17×17 -> 8×8: 1×1 -> 3×3/2 | 1×1 -> 1×7 -> 7×1 -> 3×3/2 | 3×3/2 max-pool."""

    def __init__(self, name, *args):
        super().__init__(f"{name}_block", *args)
        self.branch3x3 = [self.unit(192, 1, 1), self.unit(320, 3, 3, 2, "valid")]
        self.branch7x7x3 = [self.unit(192, 1, 1), self.unit(192, 1, 7), self.unit(192, 7, 1),
                            self.unit(192, 3, 3, 2, "valid")]
        self.pool = MaxPool2D(3, 2, name=self.names("max_pooling2d"))
        self.join = Concatenate(axis=3, name=name)

    def forward(self, x):
        b3, b7 = x, x
        for unit in self.branch3x3:
            b3 = conv_bn(unit, b3)
        for unit in self.branch7x7x3:
            b7 = conv_bn(unit, b7)
        return self.join([b3, b7, self.pool(x)])


class BlockE(InceptionBlock):
    """mixed9-10: 1×1 | 1×1 -> (1×3 | 3×1) | 1×1 -> 3×3 -> (1×3 | 3×1) | average pool -> 1×1."""

    def __init__(self, name, i, *args):
        super().__init__(f"{name}_block", *args)
        self.branch1x1 = self.unit(320, 1, 1)
        self.branch3x3 = self.unit(384, 1, 1)
        self.branch3x3_1, self.branch3x3_2 = self.unit(384, 1, 3), self.unit(384, 3, 1)
        self.join3x3 = Concatenate(axis=3, name=f"mixed9_{i}")
        self.branch3x3dbl = [self.unit(448, 1, 1), self.unit(384, 3, 3)]
        self.branch3x3dbl_1, self.branch3x3dbl_2 = self.unit(384, 1, 3), self.unit(384, 3, 1)
        self.join3x3dbl = Concatenate(axis=3, name=self.names("concatenate"))
        self.pool = AvgPool2D(3, 1, padding="same", name=self.names("average_pooling2d"))
        self.branch_pool = self.unit(192, 1, 1)
        self.join = Concatenate(axis=3, name=name)

    def forward(self, x):
        b1 = conv_bn(self.branch1x1, x)
        b3 = conv_bn(self.branch3x3, x)
        b3 = self.join3x3([conv_bn(self.branch3x3_1, b3), conv_bn(self.branch3x3_2, b3)])
        bd = conv_bn(self.branch3x3dbl[1], conv_bn(self.branch3x3dbl[0], x))
        bd = self.join3x3dbl([conv_bn(self.branch3x3dbl_1, bd), conv_bn(self.branch3x3dbl_2, bd)])
        bp = conv_bn(self.branch_pool, self.pool(x))
        return self.join([b1, b3, bd, bp])


class InceptionV3(Backbone):
    """InceptionV3 with Keras' arguments: ``include_top``, ``weights`` (a path to a Keras
    file; Keras' published file names its layers by the counters of the Keras that wrote
    it, so it is loaded by order), ``input_shape`` (at least 75×75; 299×299 by default),
    ``pooling`` (None, 'avg' or 'max', without the top), ``classes`` and
    ``classifier_activation``.

    ``width`` scales every channel count (1.0: the real InceptionV3). Named blocks, for
    ``--unfreeze-blocks``: ``stem``, then ``mixed0`` … ``mixed10``.
    """

    MIN_SIZE = 75
    PREPROCESSING = "tf"
    WIDTH_ARGUMENT = "width"

    def __init__(self, include_top=True, weights=None, input_shape=(299, 299, 3), pooling=None, classes=1000,
                 classifier_activation="softmax", width=1.0, kernel_initializer="glorot_uniform",
                 name="inception_v3"):
        super().__init__(name, input_shape, include_top, pooling, classifier_activation)
        args = (Names(), width, kernel_initializer)
        self.stem = Stem(*args)
        self.mixed = [BlockA("mixed0", 32, *args), BlockA("mixed1", 64, *args), BlockA("mixed2", 64, *args),
                      BlockB("mixed3", *args), BlockC("mixed4", 128, *args), BlockC("mixed5", 160, *args),
                      BlockC("mixed6", 160, *args), BlockC("mixed7", 192, *args), BlockD("mixed8", *args),
                      BlockE("mixed9", 0, *args), BlockE("mixed10", 1, *args)]
        for block in self.mixed:
            setattr(self, block.name, block)
        self.add_top(classes, kernel_initializer,
                     pool_names=("avg_pool", "global_average_pooling2d", "global_max_pooling2d"))
        self.finish(weights)

    def features(self, x):
        x = self.stem(x)
        for block in self.mixed:
            x = block(x)
        return x

    def blocks(self):
        """{'stem': [...], 'mixed0': [...], ..., 'mixed10': [...]}: the stem and the eleven
        blocks, each with its layers in Keras' order."""
        return {"stem": self.stem.layers(), **{b.name[:-len("_block")]: b.layers() for b in self.mixed}}


def preprocess_input(x):
    """Keras 'tf' preprocessing: RGB 0..255 -> x / 127.5 - 1, in [-1, 1]."""
    return preprocess_tf(x)
