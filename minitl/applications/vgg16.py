"""VGG16 (Simonyan & Zisserman, 2014) with Keras' layer names, so the published weight
files load by name, and its input preprocessing and label decoding, as in
`keras.applications.vgg16`."""

from minitl import functional as F
from minitl.applications.imagenet_utils import MEAN_BGR, decode_predictions, load_class_index, preprocess_caffe
from minitl.errors import ShapeError
from minitl.nn import Conv2D, Dense, Flatten, GlobalAvgPool2D, GlobalMaxPool2D, MaxPool2D, Sequential

__all__ = ["MEAN_BGR", "VGG16", "VGG16_BLOCKS", "decode_predictions", "load_class_index", "preprocess_input"]

VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))  # (convolutions, filters) per block


class VGG16(Sequential):
    """VGG16 (Simonyan & Zisserman, 2014) as ``keras.applications.VGG16`` builds it.

    Five blocks of 3×3 'same' ReLU convolutions (``block1_conv1`` … ``block5_conv3``),
    each followed by a 2×2 max-pool (``block1_pool`` … ``block5_pool``); with the top,
    ``flatten``, ``fc1`` and ``fc2`` (4096, ReLU) and ``predictions``.

    ``width`` scales every channel count (``width=1/8`` gives 8, 16, 32, 64, 64
    filters) with the same layout and names, so small models run the same code path.
    ``fc_units`` overrides the two hidden dense sizes (default 4096·width).
    ``classifier_activation=None`` returns logits; with 'softmax' the model returns
    probabilities and ``model.logits(x)`` gives the logits (training uses those).
    """

    MIN_SIZE = 32  # five 2x2 poolings: 32 pixels become 1
    BLOCKS = VGG16_BLOCKS
    PREPROCESSING = "caffe"  # the preprocess_input mode (minitl.applications.imagenet_utils.PREPROCESSING)
    WIDTH_ARGUMENT = "width"  # the argument that scales the channel counts

    def __init__(self, include_top=True, weights=None, input_shape=(224, 224, 3), classes=1000,
                 classifier_activation="softmax", width=1.0, fc_units=None, pooling=None,
                 kernel_initializer="glorot_uniform", name=None):
        self.check_input_shape(input_shape)
        model = type(self).__name__
        if not width > 0:
            raise ShapeError(f"{model} width must be a positive multiplier of the channel counts "
                             f"(1.0 for the real {model}, 1/8 for a small one), got {width}")
        if include_top and pooling is not None:
            raise ValueError("pooling applies only with include_top=False")
        if classifier_activation not in (None, "softmax"):
            raise ValueError(f"classifier_activation must be 'softmax' or None, got {classifier_activation!r}")
        layers = []
        for b, (convs, filters) in enumerate(self.BLOCKS, start=1):
            for i in range(1, convs + 1):
                layers.append(Conv2D(max(1, round(filters * width)), 3, padding="same", activation="relu",
                                     kernel_initializer=kernel_initializer, name=f"block{b}_conv{i}"))
            layers.append(MaxPool2D(2, 2, name=f"block{b}_pool"))
        if include_top:
            units = fc_units or (max(1, round(4096 * width)),) * 2
            layers += [Flatten(name="flatten"),
                       Dense(units[0], activation="relu", kernel_initializer=kernel_initializer, name="fc1"),
                       Dense(units[1], activation="relu", kernel_initializer=kernel_initializer, name="fc2"),
                       Dense(classes, name="predictions")]
        elif pooling == "avg":
            layers.append(GlobalAvgPool2D(name="global_average_pooling2d"))
        elif pooling == "max":
            layers.append(GlobalMaxPool2D(name="global_max_pooling2d"))
        elif pooling is not None:
            raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
        super().__init__(layers, name=name or model.lower(), input_shape=input_shape)
        self.include_top = include_top
        self.classifier_activation = classifier_activation if include_top else None
        if weights is not None:
            from minitl.io import load_weights
            load_weights(self, weights)

    @classmethod
    def check_input_shape(cls, input_shape, given=None):
        """ShapeError unless an (H, W, C) input is at least ``MIN_SIZE`` pixels high and wide.

        ``given``: how the size was given, for the message (default ``input_shape (H, W, C)``).
        """
        h, w = input_shape[:2]
        if h < cls.MIN_SIZE or w < cls.MIN_SIZE:
            given = given or f"input_shape {tuple(input_shape)}"
            raise ShapeError(
                f"{cls.__name__}'s five 2x2 poolings need inputs of at least {cls.MIN_SIZE}x{cls.MIN_SIZE} "
                f"pixels: {given} is too small"
            )

    def blocks(self):
        """The base's blocks in input order: {'block1': [block1_conv1, ..., block1_pool], ...}.

        Transfer learning freezes and unfreezes whole blocks by these names.
        """
        out = {}
        for layer in self.layers():
            if layer.name.startswith("block"):
                out.setdefault(layer.name.split("_")[0], []).append(layer)
        return out

    def logits(self, x):
        """The network's output before the final softmax."""
        return super().forward(x)

    def forward(self, x):
        y = self.logits(x)
        return F.softmax(y) if self.classifier_activation == "softmax" else y


def preprocess_input(x):
    """Keras 'caffe' preprocessing: RGB 0..255 -> BGR minus the ImageNet mean.

    `x`: (..., H, W, 3) channels-last RGB, for example (N, H, W, 3) or (H, W, 3).
    Returns a new array `x[..., ::-1] - MEAN_BGR`, computed in float64 for a
    float64 input and in float32 otherwise. The input is not modified (Keras
    modifies a float NumPy input in place; this does not).
    """
    return preprocess_caffe(x)
