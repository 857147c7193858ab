"""Transfer learning in five steps (the recipe of `minitl demo`, with minitl's public pieces).

1. data: a few labelled images of five new animals (elephant, giraffe, horse, sheep, zebra);
2. model: a VGG16 base pretrained on five other animals, loaded like Keras' notop file,
   and a new head (Dense layers ending in 5 outputs) in place of the old top;
3. freeze the base and train only the head, on the base's features computed once;
4. fine-tune: unfreeze the last blocks (--unfreeze, default 2), train on with a 10× lower learning rate;
5. evaluate on held-out images: accuracy and macro F1.

The pretrained base is minitl/resources/demo_vgg16_animals_notop.h5 (made by
`minitl demo --pretrain`); without it the base keeps random weights.
"""
import argparse
from pathlib import Path

from minitl.data import ArrayDataset, DataLoader
from minitl.datasets import load_animal_shapes
from minitl.demo import DEMO_BASES, TARGET, config, demo_weights_path, input_aware_init, split_target
from minitl.io import load_weights
from minitl.metrics import format_report
from minitl.nn import manual_seed
from minitl.train import EpochLog, evaluate, fit, predict
from minitl.transfer import build_model, make_optimizer, set_trainable_blocks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 images per class, 1 epoch per phase (tests)")
    parser.add_argument("--weights", help="a VGG16 notop file of the demo's size (default: the demo's)")
    parser.add_argument("--lr", type=float, default=0.001, help="learning rate of the head (default 0.001)")
    parser.add_argument("--unfreeze", type=int, default=2, help="blocks to fine-tune at the end (default 2)")
    args = parser.parse_args(argv)
    n_train, n_val, n_test, head_epochs, tune_epochs = (4, 2, 4, 1, 1) if args.quick else (20, 10, 40, 10, 3)

    # 1. data: caffe-preprocessed 32×32 RGB images, 5 classes
    images, labels, names = load_animal_shapes()
    data = split_target(images, labels, names, n_train, n_val, n_test, seed=0)
    print(f"{len(data['train'])} training, {len(data['val'])} validation, {len(data['test'])} test images "
          f"of {', '.join(TARGET)}")

    # 2. model: VGG16 without top (width 1/8) + a new head; load the pretrained base
    manual_seed(0)
    demo_vgg = DEMO_BASES["vgg16"]
    model = build_model(config(demo_vgg, len(TARGET)))
    base, head = model[0], model[1]
    weights = Path(args.weights) if args.weights else demo_weights_path()
    if weights.is_file():
        report = load_weights(base, weights)
        print(f"pretrained base: {len(report.loaded)} layers loaded from {weights}")
    else:
        print(f"NOTICE: {weights} not found (make it with `minitl demo --pretrain`); "
              f"the base keeps random weights, so expect little from the transfer")
        input_aware_init(model, demo_vgg, data["train"].images)
    print(f"new head: {' → '.join(layer.name for layer in head.layers())}")

    # 3. frozen base: its features never change, so compute them once and train the head on them
    set_trainable_blocks(base, 0)
    feats = {part: predict(base, DataLoader(data[part], 100)) for part in ("train", "val")}
    print(f"\nhead only (base frozen), lr {args.lr:g}; features {feats['train'][0].shape}")
    fit(head, make_optimizer(model, args.lr), DataLoader(ArrayDataset(*feats["train"]), 16, shuffle=True),
        DataLoader(ArrayDataset(*feats["val"]), 100), epochs=head_epochs, callbacks=[EpochLog()])
    frozen = evaluate(model, DataLoader(data["test"], 250), list(TARGET))

    # 4. fine-tune the last blocks with the head, at a lower learning rate
    set_trainable_blocks(base, args.unfreeze)
    trainable = sum(p.size for p in model.trainable_parameters())
    print(f"\nfine-tuning the last {args.unfreeze} blocks and the head "
          f"({trainable:,} of {model.count_params():,} parameters), lr {args.lr / 10:g}")
    fit(model, make_optimizer(model, args.lr / 10), DataLoader(data["train"], 16, shuffle=True),
        DataLoader(data["val"], 100), epochs=tune_epochs, callbacks=[EpochLog()])

    # 5. evaluate on the held-out test images
    tuned = evaluate(model, DataLoader(data["test"], 250), list(TARGET))
    print("\n" + format_report(tuned))
    print(f"\n{'':<12}{'accuracy':>9}{'macro F1':>10}")
    for name, r in (("frozen", frozen), ("fine-tuned", tuned)):
        print(f"{name:<12}{r['accuracy']:9.3f}{r['macro_f1']:10.3f}")


if __name__ == "__main__":
    main()
