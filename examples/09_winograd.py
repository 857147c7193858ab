"""One conv layer computed by im2col and by Winograd: multiplications, time and error.

Winograd's F(2×2, 3×3) turns a 4×4 input tile d and a 3×3 kernel g into a 2×2 output
tile with 16 multiplications instead of 36:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

(docs/math.md, section 14). First one tile by hand with B, G and A, against the
definition; then a whole layer (3×3, 'same', bias, ReLU) with every algorithm of
``minitl.conv.set_algorithm``, each against a float64 direct convolution.

    python examples/09_winograd.py                  # 1 x 56x56, 256 -> 256 channels (VGG16's block3)
    python examples/09_winograd.py --quick          # 1 x 16x16, 32 -> 32
"""
import argparse
import time

import numpy as np

import minitl.functional as F
from minitl import conv, no_grad
from minitl.winograd import AT2, BT2, G2

PRODUCTS = {"im2col": 9, "winograd": 16 / 4, "winograd4": 36 / 16}   # per output cell and (c_in, c_out)
NAMES = {"im2col": "im2col + matrix product", "winograd": "Winograd F(2x2, 3x3)", "winograd4": "Winograd F(4x4, 3x3)"}


def one_tile(rng):
    d = rng.integers(-3, 4, (4, 4)).astype(np.float64)
    g = rng.integers(-3, 4, (3, 3)).astype(np.float64)
    by_definition = np.array([[(d[i:i + 3, j:j + 3] * g).sum() for j in range(2)] for i in range(2)])
    by_winograd = AT2 @ ((G2 @ g @ G2.T) * (BT2 @ d @ BT2.T)) @ AT2.T        # BT2 is Bᵀ, AT2 is Aᵀ
    print("one 4x4 tile d, 3x3 kernel g (small integers):")
    print(f"  by the definition (36 multiplications): {by_definition.ravel().tolist()}")
    print(f"  Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A (16):          {np.round(by_winograd, 10).ravel().tolist()}")
    return float(np.abs(by_definition - by_winograd).max())


def direct64(x, w, b):
    """Float64 'same' convolution + bias + ReLU, as a sum over the 9 kernel cells."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, wd = x.shape[1:3]
    y = sum(xp[:, a:a + h, c:c + wd] @ w[a, c].astype(np.float64) for a in range(3) for c in range(3))
    return np.maximum(y + b, 0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small layer")
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.channels, args.repeat = 16, 32, 2
    rng = np.random.default_rng(0)
    print(f"tile error: {one_tile(rng):.1e}\n")

    s, c = args.size, args.channels
    x = np.abs(rng.standard_normal((1, s, s, c))).astype(np.float32)
    w = (rng.standard_normal((3, 3, c, c)) * np.sqrt(2 / (9 * c))).astype(np.float32)
    b = (0.1 * rng.standard_normal(c)).astype(np.float32)
    ref = direct64(x, w, b)
    print(f"layer: 1 x {s}x{s} x {c} -> {c} channels, 3x3 'same' + bias + ReLU, float32")
    print(f"{'algorithm':26s} {'multiplications':>16s} {'ms (best)':>10s} {'max rel. error':>15s}")
    for name in ("im2col", "winograd", "winograd4"):
        with conv.algorithm(name), no_grad():
            y = F.conv2d(x, w, b, padding="same", activation="relu").data
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                F.conv2d(x, w, b, padding="same", activation="relu")
                times.append(time.perf_counter() - t)
        mults = PRODUCTS[name] * s * s * c * c
        err = float(np.abs(y - ref).max() / np.abs(ref).max())
        print(f"{NAMES[name]:26s} {mults:16,.0f} {1e3 * min(times):10.2f} {err:15.2e}")
    print("\n(multiplications: of the element-wise products; the transforms add only additions for\n"
          " F(2x2, 3x3). Times include the input and output transforms; 'auto', the default, takes\n"
          " F(4x4, 3x3) from 64 input channels and 100 output cells per image.)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
