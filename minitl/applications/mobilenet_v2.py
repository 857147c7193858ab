"""MobileNetV2 (Sandler et al., 2018) as ``keras.applications.MobileNetV2`` builds it, with
Keras' layer names and weight order, and its input preprocessing and label decoding, as in
`keras.applications.mobilenet_v2`.

A 3×3/2 convolution (``Conv1``), then 17 inverted residual blocks (``expanded_conv``,
``block_1`` … ``block_16``): each widens its input with a 1×1 convolution (×6; not in
the first block), filters every channel on its own with a 3×3 depthwise convolution
(stride 1 or 2), and narrows it again with a linear 1×1 convolution; where input and
output have the same shape the input is added back. A last 1×1 convolution (``Conv_1``)
gives 1280 channels. Every activation is ReLU6, min(max(x, 0), 6).
"""

from minitl.applications.backbone import Backbone
from minitl.applications.imagenet_utils import decode_predictions, load_class_index, preprocess_tf
from minitl.nn import Add, BatchNormalization, Conv2D, DepthwiseConv2D, Module, ReLU, ZeroPadding2D

__all__ = [
    "MOBILENET_V2_BLOCKS",
    "InvertedResidual",
    "MobileNetV2",
    "decode_predictions",
    "load_class_index",
    "make_divisible",
    "preprocess_input",
]

# (expansion t, output channels c, blocks n, first stride s) per bottleneck sequence (the paper's Table 2)
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1))
MOMENTUM, EPSILON = 0.999, 1e-3  # Keras' MobileNetV2 batch normalization


def make_divisible(v, divisor=8):
    """Keras' _make_divisible: v rounded to a multiple of ``divisor`` (at least ``divisor``),
    never more than 10% below v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def correct_pad(size, kernel=3):
    """Keras' correct_pad: the ((top, bottom), (left, right)) zeros before a stride-2 'valid'
    convolution over an (H, W) map, so that it works as TensorFlow's 'same' padding."""
    adjust = [1 - s % 2 for s in size]
    c = kernel // 2
    return (c - adjust[0], c), (c - adjust[1], c)


# inplace=True: in inference without a graph, BN, ReLU6 and Add overwrite the fresh arrays the
# layer before them made (a convolution's output, the block's new branch), saving a pass each
def _bn(name):
    return BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON, name=name, inplace=True)


def _relu6(name):
    return ReLU(6.0, name=name, inplace=True)


class InvertedResidual(Module):
    """One block: expand (1×1, ×expansion) -> BN -> ReLU6 -> depthwise 3×3 (stride) -> BN ->
    ReLU6 -> project (1×1, linear) -> BN, then + x where the shapes allow. ``size``: the
    (H, W) of the block's input for the model's input shape, which sets the padding of a
    stride-2 block as Keras sets it."""

    def __init__(self, in_channels, filters, expansion, strides, block_id, size, kernel_initializer):
        prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
        super().__init__(prefix[:-1])
        self.expands, self.strides = block_id > 0, strides
        self.residual = in_channels == filters and strides == 1
        if self.expands:
            self.expand = Conv2D(expansion * in_channels, 1, padding="same", use_bias=False,
                                 kernel_initializer=kernel_initializer, name=f"{prefix}expand")
            self.expand_bn = _bn(f"{prefix}expand_BN")
            self.expand_relu = _relu6(f"{prefix}expand_relu")
        if strides == 2:
            self.pad = ZeroPadding2D(correct_pad(size), name=f"{prefix}pad")
        self.depthwise = DepthwiseConv2D(3, strides=strides, padding="same" if strides == 1 else "valid",
                                         use_bias=False, name=f"{prefix}depthwise")
        self.depthwise_bn = _bn(f"{prefix}depthwise_BN")
        self.depthwise_relu = _relu6(f"{prefix}depthwise_relu")
        self.project = Conv2D(filters, 1, padding="same", use_bias=False, kernel_initializer=kernel_initializer,
                              name=f"{prefix}project")
        self.project_bn = _bn(f"{prefix}project_BN")
        if self.residual:
            self.add = Add(name=f"{prefix}add", inplace=True)

    def forward(self, x):
        y = self.expand_relu(self.expand_bn(self.expand(x))) if self.expands else x
        if self.strides == 2:
            y = self.pad(y)
        y = self.depthwise_relu(self.depthwise_bn(self.depthwise(y)))
        y = self.project_bn(self.project(y))
        return self.add([x, y]) if self.residual else y


class MobileNetV2(Backbone):
    """MobileNetV2 with Keras' arguments: ``input_shape`` (at least 32×32), ``alpha`` (the
    width multiplier: 0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 for Keras' published files),
    ``include_top``, ``weights`` (a path to a Keras file, loaded by name), ``pooling``
    (None, 'avg' or 'max', without the top), ``classes`` and ``classifier_activation``.

    Named blocks, for ``--unfreeze-blocks``: ``conv1`` (``Conv1`` and its BN), the seven
    bottleneck sequences ``bottleneck1`` … ``bottleneck7`` (blocks 0; 1-2; 3-5; 6-9; 10-12;
    13-15; 16) and ``conv_1`` (``Conv_1``, its BN and ``out_relu``).
    """

    MIN_SIZE = 32
    PREPROCESSING = "tf"
    WIDTH_ARGUMENT = "alpha"

    def __init__(self, input_shape=(224, 224, 3), alpha=1.0, include_top=True, weights=None, pooling=None,
                 classes=1000, classifier_activation="softmax", kernel_initializer="glorot_uniform", name=None):
        if not alpha > 0:
            raise ValueError(f"MobileNetV2's alpha must be a positive width multiplier, got {alpha}")
        name = name or f"mobilenetv2_{alpha:0.2f}_{input_shape[0]}"
        super().__init__(name, input_shape, include_top, pooling, classifier_activation)
        self.alpha = alpha
        channels = make_divisible(32 * alpha)
        self.Conv1 = Conv2D(channels, 3, strides=2, padding="same", use_bias=False,
                            kernel_initializer=kernel_initializer, name="Conv1")
        self.bn_Conv1 = _bn("bn_Conv1")
        self.Conv1_relu = _relu6("Conv1_relu")
        size = [-(-s // 2) for s in input_shape[:2]]  # after Conv1's 'same' stride 2
        self.inverted_residuals, block_id, stages = [], 0, []
        for expansion, c, n, first_stride in MOBILENET_V2_BLOCKS:
            stage = []
            for i in range(n):
                strides = first_stride if i == 0 else 1
                filters = make_divisible(int(c * alpha))
                block = InvertedResidual(channels, filters, expansion, strides, block_id, size, kernel_initializer)
                setattr(self, block.name, block)
                self.inverted_residuals.append(block)
                stage.append(block.name + "_")
                channels, block_id = filters, block_id + 1
                size = [-(-s // strides) for s in size]
            stages.append(tuple(stage))
        self.Conv_1 = Conv2D(make_divisible(1280 * alpha) if alpha > 1.0 else 1280, 1, use_bias=False,
                             kernel_initializer=kernel_initializer, name="Conv_1")
        self.Conv_1_bn = _bn("Conv_1_bn")
        self.out_relu = _relu6("out_relu")
        self.BLOCKS = (("conv1", ("Conv1", "bn_Conv1")),
                       *((f"bottleneck{i}", prefixes) for i, prefixes in enumerate(stages, start=1)),
                       ("conv_1", ("Conv_1", "out_relu")))
        self.add_top(classes, kernel_initializer,
                     pool_names=("global_average_pooling2d", "global_average_pooling2d", "global_max_pooling2d"))
        self.finish(weights)

    def features(self, x):
        x = self.Conv1_relu(self.bn_Conv1(self.Conv1(x)))
        for block in self.inverted_residuals:
            x = block(x)
        return self.out_relu(self.Conv_1_bn(self.Conv_1(x)))


def preprocess_input(x):
    """Keras 'tf' preprocessing: RGB 0..255 -> x / 127.5 - 1, in [-1, 1]."""
    return preprocess_tf(x)
