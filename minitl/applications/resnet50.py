"""ResNet50 (He et al., 2015, "v1") as ``keras.applications.ResNet50`` builds it, with Keras'
layer names and weight order, and its input preprocessing and label decoding, as in
`keras.applications.resnet50`.

The stem (``conv1_*``, ``pool1_*``) is followed by four stages of bottleneck blocks,
``conv2`` … ``conv5`` with 3, 4, 6 and 3 blocks. Each block is 1×1 → 3×3 → 1×1
convolutions, each followed by batch normalization, plus a shortcut: the input itself,
or a 1×1 projection (``_0_conv``, ``_0_bn``) in the first block of a stage, where the
width (and from ``conv3`` on, with stride 2, the size) changes.
"""

from minitl.applications.backbone import Backbone
from minitl.applications.imagenet_utils import MEAN_BGR, decode_predictions, load_class_index, preprocess_caffe
from minitl.nn import Add, BatchNormalization, Conv2D, MaxPool2D, Module, ReLU, ZeroPadding2D

__all__ = [
    "MEAN_BGR",
    "RESNET50_STAGES",
    "ResNet50",
    "ResidualBlock",
    "decode_predictions",
    "load_class_index",
    "preprocess_input",
]

RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (filters, blocks, first stride): conv2..5
EPSILON = 1.001e-5  # Keras' ResNet batch normalization epsilon


# inplace=True: in inference without a graph, BN, ReLU and Add overwrite the fresh arrays the
# layer before them made (a convolution's output, the block's residual branch), saving a pass each
def _bn(name):
    return BatchNormalization(epsilon=EPSILON, name=name, inplace=True)


def _relu(name):
    return ReLU(name=name, inplace=True)


def _width(filters, width):
    return max(1, round(filters * width))


class ResidualBlock(Module):
    """One bottleneck block, ``name`` = 'conv2_block1' …: y = relu(F(x) + shortcut(x)), with
    F = 1×1 (stride) → BN → ReLU → 3×3 → BN → ReLU → 1×1 (4·filters) → BN. The shortcut is x,
    or with ``projection`` a strided 1×1 convolution and BN to F's width and size
    (Keras' ResNet v1 puts the stride on the first 1×1 convolution, not on the 3×3)."""

    def __init__(self, filters, strides, projection, name, kernel_initializer="glorot_uniform"):
        super().__init__(name)
        self.projection = projection

        def conv(filters, size, strides, key, padding="valid"):
            return Conv2D(filters, size, strides=strides, padding=padding, kernel_initializer=kernel_initializer,
                          name=f"{name}_{key}_conv")

        if projection:
            self.shortcut_conv = conv(4 * filters, 1, strides, 0)
            self.shortcut_bn = _bn(f"{name}_0_bn")
        self.conv1, self.bn1 = conv(filters, 1, strides, 1), _bn(f"{name}_1_bn")
        self.relu1 = _relu(f"{name}_1_relu")
        self.conv2 = conv(filters, 3, 1, 2, padding="same")
        self.bn2, self.relu2 = _bn(f"{name}_2_bn"), _relu(f"{name}_2_relu")
        self.conv3 = conv(4 * filters, 1, 1, 3)
        self.bn3 = _bn(f"{name}_3_bn")
        self.add = Add(name=f"{name}_add", inplace=True)
        self.out = _relu(f"{name}_out")

    def forward(self, x):
        shortcut = self.shortcut_bn(self.shortcut_conv(x)) if self.projection else x
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.out(self.add([shortcut, y]))


class ResNet50(Backbone):
    """ResNet50 with Keras' arguments: ``include_top``, ``weights`` (a path to a Keras file,
    loaded by name), ``input_shape`` (at least 32×32), ``pooling`` (None, 'avg' or 'max',
    without the top), ``classes`` and ``classifier_activation`` ('softmax' or None).

    ``width`` scales every channel count with the same layout and names (1.0: the real
    ResNet50), so that small models run the same code path; ``stages`` gives the
    (filters, blocks, first stride) of the stages conv2, conv3, ... (ResNet50's by
    default; Keras' ResNet takes them as its ``stack_fn``). Named blocks, for
    ``--unfreeze-blocks``: ``conv1`` (the stem) and the stages ``conv2`` … ``conv5``.
    """

    MIN_SIZE = 32  # five halvings: 32 pixels become 1
    PREPROCESSING = "caffe"
    WIDTH_ARGUMENT = "width"
    BLOCKS = (("conv1", ("conv1_", "pool1_")), ("conv2", ("conv2_",)), ("conv3", ("conv3_",)),
              ("conv4", ("conv4_",)), ("conv5", ("conv5_",)))

    def __init__(self, include_top=True, weights=None, input_shape=(224, 224, 3), pooling=None, classes=1000,
                 classifier_activation="softmax", width=1.0, kernel_initializer="glorot_uniform", name="resnet50",
                 stages=RESNET50_STAGES):
        super().__init__(name, input_shape, include_top, pooling, classifier_activation)
        self.conv1_pad = ZeroPadding2D(((3, 3), (3, 3)), name="conv1_pad")
        self.conv1_conv = Conv2D(_width(64, width), 7, strides=2, kernel_initializer=kernel_initializer,
                                 name="conv1_conv")
        self.conv1_bn = _bn("conv1_bn")
        self.conv1_relu = _relu("conv1_relu")
        self.pool1_pad = ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad")
        self.pool1_pool = MaxPool2D(3, 2, name="pool1_pool")
        self.residual_blocks = []
        for stage, (filters, blocks, strides) in enumerate(stages, start=2):
            for i in range(1, blocks + 1):
                block = ResidualBlock(_width(filters, width), strides if i == 1 else 1, i == 1,
                                      f"conv{stage}_block{i}", kernel_initializer)
                setattr(self, block.name, block)
                self.residual_blocks.append(block)
        self.add_top(classes, kernel_initializer, pool_names=("avg_pool", "avg_pool", "max_pool"))
        self.finish(weights)

    def features(self, x):
        x = self.conv1_relu(self.conv1_bn(self.conv1_conv(self.conv1_pad(x))))
        x = self.pool1_pool(self.pool1_pad(x))
        for block in self.residual_blocks:
            x = block(x)
        return x


def preprocess_input(x):
    """Keras 'caffe' preprocessing, as for VGG16: RGB 0..255 -> BGR minus the ImageNet mean."""
    return preprocess_caffe(x)
