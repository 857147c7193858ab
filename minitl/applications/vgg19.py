"""VGG19 (Simonyan & Zisserman, 2014) with Keras' layer names, and its input preprocessing
and label decoding, as in `keras.applications.vgg19`: VGG16 with four convolutions in
each of its last three blocks (``block3_conv4``, ``block4_conv4``, ``block5_conv4``)."""

from minitl.applications.imagenet_utils import MEAN_BGR, decode_predictions, load_class_index, preprocess_caffe
from minitl.applications.vgg16 import VGG16

__all__ = ["MEAN_BGR", "VGG19", "VGG19_BLOCKS", "decode_predictions", "load_class_index", "preprocess_input"]

VGG19_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))  # (convolutions, filters) per block


class VGG19(VGG16):
    """VGG19 as ``keras.applications.VGG19`` builds it: 16 convolutions in five blocks
    (``block1_conv1`` … ``block5_conv4``, each block ending in ``blockN_pool``), then with
    the top ``flatten``, ``fc1``, ``fc2`` and ``predictions``. The arguments are VGG16's."""

    BLOCKS = VGG19_BLOCKS


def preprocess_input(x):
    """Keras 'caffe' preprocessing, as for VGG16: RGB 0..255 -> BGR minus the ImageNet mean."""
    return preprocess_caffe(x)
