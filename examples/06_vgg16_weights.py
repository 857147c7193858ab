"""VGG16's weights: build the model, save them as Keras HDF5, load them back, look at a kernel.

A Keras weight file holds one group per layer, named like the layer (block1_conv1,
..., fc1, predictions), with the arrays kernel (kh, kw, C_in, C_out) and bias (C_out,).
minitl uses Keras' names and layouts, so the published files load as they are:

    python examples/06_vgg16_weights.py --weights vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5

By default the model is VGG16 at 1/8 of the width (same layers and names, 8 to 64
filters, 32×32 input); --full builds the real one (138 million parameters; its
file takes about 530 MB in the temporary folder).
"""
import argparse
import math
import os
import tempfile

import h5py
import numpy as np

from minitl.applications import VGG16
from minitl.io import load_weights, read_keras_weights, save_weights
from minitl.nn import manual_seed


def model_for_file(path):
    """A VGG16 whose width, top and class count fit a weight file with Keras' layer names."""
    layers = {e.name: e for e in read_keras_weights(path)}
    if "block1_conv1" not in layers:
        raise SystemExit(f"{path}: no layer named block1_conv1; this example reads VGG16 files with Keras' names")
    width = layers["block1_conv1"].arrays[0].shape[3] / 64
    if "fc1" not in layers:
        return VGG16(include_top=False, width=width, input_shape=(224, 224, 3) if width == 1 else (32, 32, 3))
    fc1_in, fc1 = layers["fc1"].arrays[0].shape
    side = 32 * math.isqrt(fc1_in // layers["block5_conv3"].arrays[0].shape[3])
    return VGG16(width=width, input_shape=(side, side, 3), fc_units=(fc1, layers["fc2"].arrays[0].shape[1]),
                 classes=layers["predictions"].arrays[0].shape[1])


def show_file(path, lines=6):
    """The first datasets of an HDF5 weight file: path inside the file, shape, dtype."""
    found = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.append(f"  {name:<40} {obj.shape!s:<18} {obj.dtype}")
                     if isinstance(obj, h5py.Dataset) else None)
    print(f"{path} ({os.path.getsize(path) / 1e6:.1f} MB), first datasets of {len(found)}:")
    print("\n".join(found[:lines]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="VGG16 at 1/16 of the width (used by the tests)")
    parser.add_argument("--full", action="store_true", help="the real VGG16 (224×224, 1000 classes)")
    parser.add_argument("--weights", metavar="FILE.h5", help="load this Keras VGG16 file instead of saving one")
    args = parser.parse_args(argv)

    def build(seed):
        manual_seed(seed)
        if args.weights:
            return model_for_file(args.weights)
        if args.full:
            return VGG16()
        return VGG16(width=1 / 16 if args.quick else 1 / 8, input_shape=(32, 32, 3), classes=10)

    model = build(0)
    model.summary()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.weights
        if path is None:
            path = os.path.join(tmp, "vgg16.h5")
            save_weights(model, path)
            print(f"\nsaved with minitl.io.save_weights to {path}")
            fresh = build(1)  # the same model with other random weights, to load the file into
        else:
            fresh = model
        show_file(path)
        report = load_weights(fresh, path)  # every layer, or a WeightsError naming those missing
        print(f"\nminitl.io.load_weights: {len(report.loaded)} layers loaded")
        if fresh is not model:
            same = all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
            print(f"every array equal after the round trip: {same}")

    layer = fresh.get_layer("block1_conv1")
    k, b = layer.kernel.numpy(), layer.bias.numpy()
    print(f"\nblock1_conv1: kernel {k.shape} (kh, kw, C_in, C_out), mean {k.mean():.4f}, std {k.std():.4f}; "
          f"bias {b.shape}, mean {b.mean():.4f}")
    print("first filter, kernel[:, :, :, 0], one 3×3 slice per input channel "
          "(B, G, R for Keras' ImageNet files, whose inputs are BGR):")
    with np.printoptions(precision=3, suppress=True):
        print(k[:, :, :, 0].transpose(2, 0, 1))


if __name__ == "__main__":
    main()
