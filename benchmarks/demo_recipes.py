"""The demo's frozen and fine-tuned settings under two recipes, over seeds and label budgets.

    python benchmarks/demo_recipes.py                          # both bases, 10/20/50 images a class, seeds 0-2
    python benchmarks/demo_recipes.py --arch vgg16 --per-class 20 --recipes earlier recipe
    python benchmarks/demo_recipes.py --timing 3               # + wall time of the two settings, alternated rounds
    python benchmarks/demo_recipes.py --recipes recipe --vary label_smoothing=0.1 mixup=0.4 --per-class 40,20,10,5,5

'recipe' is each demo base's own (`minitl.demo.DEMO_BASES`); 'earlier' is the recipe the
demo had before the open training loop: SGD with momentum 0.9, the head at 0.01 for 30
epochs on cached features, then 2 blocks and the head at 0.001 for 15 epochs, no schedule,
no augmentation. For each arch, budget, recipe and seed the script runs `minitl.demo.run`
without the scratch setting and prints, per setting, the validation accuracy of the best
epoch (lowest validation loss; what the settings were chosen on), then the test accuracy
and macro F1 of that epoch (500 test images), each as the mean over the seeds with the
per-seed values. --vary KEY=VALUE adds, for each, the base's recipe with that one field
changed (fields of `minitl.demo.Recipe`). --per-class takes a number or one per class
(an unbalanced training set; the validation and test sets stay 10 and 100 a class).
--timing N times the frozen + fine-tuned settings of both recipes on
seed 0, alternating the recipes N times, and prints each recipe's best time and the ratio.
"""
import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minitl import demo

EARLIER = demo.Recipe(frozen_epochs=30, frozen_lr=0.01, finetune_epochs=15, lr=0.001, lr_mult=1.0, optimizer="sgd",
                      schedule="none", unfreeze_blocks=2, augment=False)


def recipes(arch, vary=()):
    base = demo.demo_base(arch).recipe
    out = {"earlier": EARLIER, "recipe": base}
    for change in vary:
        key, value = change.split("=")
        kind = type(getattr(base, key)) if getattr(base, key) is not None else str
        out[f"+{change}"] = dataclasses.replace(base, **{key: value.lower() == "true" if kind is bool else kind(value)})
    return out


def budget(text):
    counts = [int(n) for n in text.split(",")]
    return counts[0] if len(counts) == 1 else tuple(counts)


def one(arch, recipe, per_class, seed, out):
    return demo.run(out=out, arch=arch, train_per_class=per_class, recipe=recipe, seed=seed, progress=False,
                    log=lambda *a: None, scratch=False)


def cell(values):
    return f"{np.mean(values):.3f} ({' / '.join(f'{v:.3f}' for v in values)})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=list(demo.DEMO_BASES), choices=list(demo.DEMO_BASES))
    parser.add_argument("--per-class", nargs="+", type=budget, default=[10, 20, 50])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=["earlier", "recipe"], choices=["earlier", "recipe"])
    parser.add_argument("--vary", nargs="*", default=[], help="KEY=VALUE: the recipe with one field changed")
    parser.add_argument("--timing", type=int, default=0, help="alternated timing rounds (0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("| base | images a class | recipe | setting | val accuracy | test accuracy (seeds) | test macro F1 |")
        print("| --- | ---: | --- | --- | --- | --- | --- |")
        for arch in args.arch:
            for per_class in args.per_class:
                for name in [*args.recipes, *(f"+{change}" for change in args.vary)]:
                    runs = [one(arch, recipes(arch, args.vary)[name], per_class, seed,
                                Path(tmp) / f"{arch}-{len(name)}-{seed}-{abs(hash((name, per_class)))}")
                            for seed in args.seeds]
                    for setting in ("frozen", "finetuned"):
                        rows = [r[setting] for r in runs]
                        counts = "/".join(map(str, per_class)) if isinstance(per_class, tuple) else per_class
                        print(f"| {arch} | {counts} | {name} | {setting} | "
                              f"{cell([r['val_accuracy'] for r in rows])} | {cell([r['accuracy'] for r in rows])} | "
                              f"{np.mean([r['macro_f1'] for r in rows]):.3f} |", flush=True)
        for arch in args.arch if args.timing else ():
            best = {name: float("inf") for name in recipes(arch)}
            for i in range(args.timing):
                for name, recipe in recipes(arch).items():
                    r = one(arch, recipe, 20, 0, Path(tmp) / f"time-{arch}-{name}-{i}")
                    best[name] = min(best[name], r["frozen"]["seconds"] + r["finetuned"]["seconds"])
            print(f"{arch}: frozen + fine-tuned settings, best of {args.timing} alternated rounds: "
                  + ", ".join(f"{name} {s:.2f} s" for name, s in best.items())
                  + f"; ratio {best['recipe'] / best['earlier']:.2f}")
            print(f"  recipe: {dataclasses.asdict(recipes(arch)['recipe'])}")


if __name__ == "__main__":
    main()
