"""VGG16 with Keras' layer names, so the published weight files load by name."""

from . import functional as F
from .errors import ShapeError
from .nn import Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, Sequential

VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


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

    def __init__(self, include_top=True, weights=None, input_shape=(224, 224, 3), classes=1000,
                 classifier_activation="softmax", width=1.0, fc_units=None, pooling=None,
                 kernel_initializer="glorot_uniform", name="vgg16"):
        h, w, c = input_shape
        if h < 32 or w < 32:
            raise ShapeError(f"VGG16 needs inputs of at least 32x32 pixels for its five 2x2 poolings, "
                             f"got input_shape {tuple(input_shape)}")
        if not width > 0:
            raise ShapeError(f"VGG16 width must be a positive multiplier of the channel counts "
                             f"(1.0 for the real VGG16, 1/8 for a small one), got {width}")
        if include_top and pooling is not None:
            raise ValueError("pooling applies only with include_top=False")
        if classifier_activation not in (None, "softmax"):
            raise ValueError(f"classifier_activation must be 'softmax' or None, got {classifier_activation!r}")
        layers = []
        for b, (convs, filters) in enumerate(VGG16_BLOCKS, start=1):
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
        elif pooling is not None:
            raise ValueError(f"pooling must be None or 'avg', got {pooling!r}")
        super().__init__(layers, name=name, input_shape=input_shape)
        self.include_top = include_top
        self.classifier_activation = classifier_activation if include_top else None
        if weights is not None:
            from .io import load_weights
            load_weights(self, weights)

    def logits(self, x):
        """The network's output before the final softmax."""
        return super().forward(x)

    def forward(self, x):
        y = self.logits(x)
        return F.softmax(y) if self.classifier_activation == "softmax" else y




__all__ = ["VGG16", "VGG16_BLOCKS"]
