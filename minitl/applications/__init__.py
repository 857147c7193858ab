"""Models pretrained on ImageNet, each with its own input preprocessing and label decoding,
as in `keras.applications`: `from minitl.applications import VGG16`,
`minitl.applications.vgg16.preprocess_input`.

``BACKBONES`` maps an architecture name (the ``arch`` of a run record) to its class.
A backbone is a `minitl.nn.Sequential` that takes ``include_top``, ``input_shape``,
``width`` and ``kernel_initializer``, checks its input size with
``check_input_shape(input_shape)`` and names its blocks in order with ``blocks()``.
"""

from minitl.applications import imagenet_utils, vgg16
from minitl.applications.vgg16 import VGG16

__all__ = ["VGG16", "BACKBONES", "get_backbone", "imagenet_utils", "vgg16"]

BACKBONES = {"vgg16": VGG16}


def get_backbone(arch):
    """The backbone class for an architecture name ('vgg16')."""
    try:
        return BACKBONES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}: use {', '.join(BACKBONES)}") from None
