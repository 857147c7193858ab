"""Models pretrained on ImageNet, each with its own input preprocessing and label decoding,
as in `keras.applications`: `from minitl.applications import ResNet50`,
`minitl.applications.resnet50.preprocess_input`.

``BACKBONES`` maps an architecture name (the ``arch`` of a run record) to its class.
A backbone takes ``include_top``, ``input_shape``, its width multiplier (the argument
named by its ``WIDTH_ARGUMENT``: ``width``, or MobileNetV2's ``alpha``) and
``kernel_initializer``; it checks its input size with ``check_input_shape(input_shape)``
(at least ``MIN_SIZE`` pixels), names its blocks in order with ``blocks()``, gives each
layer's output shape with ``layer_shapes`` and names its ``preprocess_input`` mode in
``PREPROCESSING`` ('caffe' or 'tf').
"""

from minitl.applications import imagenet_utils, inception_v3, mobilenet_v2, resnet50, vgg16, vgg19
from minitl.applications.backbone import multiply_adds
from minitl.applications.inception_v3 import InceptionV3
from minitl.applications.mobilenet_v2 import MobileNetV2
from minitl.applications.resnet50 import ResNet50
from minitl.applications.vgg16 import VGG16
from minitl.applications.vgg19 import VGG19

__all__ = [
    "BACKBONES",
    "VGG16",
    "VGG19",
    "InceptionV3",
    "MobileNetV2",
    "ResNet50",
    "get_backbone",
    "imagenet_utils",
    "inception_v3",
    "mobilenet_v2",
    "multiply_adds",
    "resnet50",
    "vgg16",
    "vgg19",
]

BACKBONES = {"vgg16": VGG16, "vgg19": VGG19, "resnet50": ResNet50, "inception_v3": InceptionV3,
             "mobilenet_v2": MobileNetV2}


def get_backbone(arch):
    """The backbone class for an architecture name ('vgg16', 'resnet50', ...)."""
    try:
        return BACKBONES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}: use {', '.join(BACKBONES)}") from None
