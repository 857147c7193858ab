"""Gradient descent W_{t+1} = W_t − η ∇L(W_t) on an ill-conditioned bowl.

    L(w) = ½ (w₁² + κ w₂²),   ∇L(w) = (w₁, κ w₂),   κ = 50

Along w₂ the bowl is κ times steeper than along w₁. Plain SGD must keep η < 2/κ or
the w₂ coordinate overshoots further on every step (|1 − ηκ| > 1: divergence), and
with such a small η it crawls along w₁. Momentum (v ← μv + g, W ← W − ηv) builds
up speed along the shallow direction; Nesterov uses the step g + μv instead of v.
Adam divides each coordinate's step by the running size of its gradient, so every
coordinate moves by about η per step however steep it is: η = 0.2 > 2/κ does not
diverge, but the approach is slow and ends in small oscillations.
Every path is run by minitl.optim.SGD (or minitl.optim.Adam) on a minitl Tensor.
"""
import argparse

import numpy as np

from minitl import Tensor
from minitl.optim import SGD, Adam

KAPPA = 50.0
START = (-4.0, 1.2)


def loss_fn(w):
    return 0.5 * (Tensor(np.array([1.0, KAPPA])) * w * w).sum()


def descend(lr, steps, momentum=0.0, nesterov=False, adam=False):
    """The path (steps + 1, 2) and the losses of SGD (or Adam) from START."""
    w = Tensor(np.array(START), requires_grad=True)
    opt = Adam([w], lr=lr) if adam else SGD([w], lr=lr, momentum=momentum, nesterov=nesterov)
    path, losses = [w.numpy().copy()], []
    for _ in range(steps):
        loss = loss_fn(w)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        path.append(w.numpy().copy())
    losses.append(loss_fn(w).item())
    return np.array(path), np.array(losses)


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = np.meshgrid(np.linspace(-4.5, 4.5, 200), np.linspace(-1.6, 1.6, 200))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.contour(a, b, 0.5 * (a ** 2 + KAPPA * b ** 2), levels=np.geomspace(0.01, 80, 12), colors="0.75")
    for label, (p, _) in runs.items():
        out = np.flatnonzero(np.abs(p[:, 1]) > 1.6)
        p = p[:out[0] + 1] if len(out) else p  # a diverging path: only until it leaves the picture
        ax.plot(p[:, 0], p[:, 1], ".-", lw=1, ms=3, label=label)
    ax.set_xlim(-4.5, 4.5)
    ax.set_ylim(-1.6, 1.6)
    ax.set_xlabel("w₁")
    ax.set_ylabel("w₂")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"SGD on L(w) = ½(w₁² + {KAPPA:g} w₂²)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fmt(w):
    return "(" + ", ".join(f"{float(v):.4g}" for v in w) + ")"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps (used by the tests)")
    parser.add_argument("--steps", type=int, default=None, help="steps per path (default 60, 30 with --quick)")
    parser.add_argument("--out", default="sgd_paths.png", help="PNG of the paths (needs matplotlib)")
    args = parser.parse_args(argv)
    steps = args.steps or (30 if args.quick else 60)

    # one step by hand, to see that the optimizer does what the formula says
    lr = 0.025
    g = np.array([START[0], KAPPA * START[1]])
    by_hand = np.array(START) - lr * g
    print(f"W_0 = {fmt(START)}, ∇L(W_0) = {fmt(g)}, η = {lr}")
    print(f"W_1 = W_0 − η∇L(W_0) = {fmt(by_hand)} by hand, {fmt(descend(lr, 1)[0][1])} by minitl.optim.SGD\n")

    runs = {
        "plain, η=0.025": descend(lr, steps),
        "momentum 0.8, η=0.025": descend(lr, steps, momentum=0.8),
        "Nesterov 0.8, η=0.025": descend(lr, steps, momentum=0.8, nesterov=True),
        "plain, η=0.042 (> 2/κ = 0.04)": descend(0.042, steps),
        "Adam, η=0.2": descend(0.2, steps, adam=True),
    }
    print(f"{'method':<30}  {'L after ' + str(steps) + ' steps':>16}  {'first step with L < 1e-3':>25}")
    for label, (_, losses) in runs.items():
        below = np.flatnonzero(losses < 1e-3)
        reached = str(below[0]) if len(below) else ("diverged" if losses[-1] > losses[0] else "not yet")
        print(f"{label:<30}  {losses[-1]:16.3g}  {reached:>25}")
    _, losses = runs["plain, η=0.042 (> 2/κ = 0.04)"]
    print("\ntoo large a step: w₂ is multiplied by 1 − ηκ = "
          f"{1 - 0.042 * KAPPA:.2f} on every step, so L grows: "
          + ", ".join(f"{v:.3g}" for v in losses[::max(steps // 6, 1)]))

    try:
        plot(runs, args.out)
        print(f"\npaths drawn in {args.out}")
    except ImportError:
        print("\n(matplotlib is not installed, so no picture: pip install 'minitl[plot]')")


if __name__ == "__main__":
    main()
