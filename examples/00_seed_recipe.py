"""The transfer-learning recipe in a dozen lines of Python, as one writes it in Keras.

Load VGG16 without its top from a Keras HDF5 file, freeze it, add
Flatten → Dense(1024, relu) → Dense(512, relu) → Dense(n, softmax),
train with SGD at a low learning rate, evaluate on held-out images.

Offline, on the demo's data and base: five animals (elephant, giraffe, horse, sheep,
zebra) as 32×32 silhouettes, and minitl/resources/demo_vgg16_animals_notop.h5, a VGG16 of width
1/8 pretrained by minitl on five other animals and saved in Keras' notop layout
(`minitl demo --pretrain` makes it). With the published file
(`minitl weights fetch vgg16-notop`) the same lines take
``VGG16(include_top=False, weights=that_file, input_shape=(224, 224, 3))`` and 224×224 photos.
"""
import argparse

from minitl.applications import VGG16
from minitl.data import DataLoader
from minitl.datasets import load_animal_shapes
from minitl.demo import DEMO_BASES, SIZE, TARGET, demo_weights_path, split_target
from minitl.metrics import format_report
from minitl.nn import Dense, Flatten, Sequential, manual_seed
from minitl.optim import SGD
from minitl.train import EpochLog, evaluate, fit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 images per class and 1 epoch (tests)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs (20)")
    parser.add_argument("--lr", type=float, default=0.001, help="SGD learning rate (0.001)")
    args = parser.parse_args(argv)
    n_train, n_val, n_test, epochs = (4, 2, 4, 1) if args.quick else (20, 10, 100, args.epochs)

    # the data: caffe-preprocessed 32×32 RGB images (VGG16's preprocess_input), labels 0..4
    images, labels, names = load_animal_shapes()
    data = split_target(images, labels, names, n_train, n_val, n_test, seed=0)

    manual_seed(0)
    width = DEMO_BASES["vgg16"].width                # the demo's VGG16 has 1/8 of the channels
    base = VGG16(include_top=False, weights=demo_weights_path(), input_shape=(SIZE, SIZE, 3), width=width)
    base.freeze()                                    # Keras: base.trainable = False
    model = Sequential([
        base,
        Flatten(),
        Dense(1024, activation="relu"),
        Dense(512, activation="relu"),
        Dense(len(TARGET)),                          # logits: the softmax is inside the loss
    ], input_shape=(SIZE, SIZE, 3))                  # builds every layer, so the optimizer gets their weights
    optimizer = SGD(model.parameters(), lr=args.lr, momentum=0.9)
    fit(model, optimizer, DataLoader(data["train"], 16, shuffle=True), DataLoader(data["val"], 50),
        epochs=epochs, callbacks=[EpochLog()])
    report = evaluate(model, DataLoader(data["test"], 250), list(TARGET))
    print("\n" + format_report(report))
    print(f"\ntest accuracy {report['accuracy']:.3f}, macro F1 {report['macro_f1']:.3f} "
          f"({len(data['test'])} images)")
    return report


if __name__ == "__main__":
    main()
