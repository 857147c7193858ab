"""Grad-CAM: which part of the image made the network choose a class.

With A the output of the last convolution (h, w, K channels) and y_c the score
(logit) of class c:

    w_k = 1/(h·w) Σ_ij ∂y_c/∂A_k[i, j]       how much channel k matters for class c
    cam = relu(Σ_k w_k A_k)                   where those channels fire, for class c

then the h×w map is upsampled to the image's size and scaled to [0, 1].
∂y_c/∂A comes from one backward pass, with A.retain_grad() to keep it.

Without arguments, a small network learns a task whose answer is known: is the
coloured square red or blue? Each 32×32 image also holds a white square that says
nothing; the heat map should sit on the coloured one. With --run DIR (a run folder
of `minitl finetune` or `minitl demo`) and --image FILE, the VGG16 transfer model of
that run is explained at block5_conv3.
"""
import argparse
import time

import numpy as np
from PIL import Image

import minitl.functional as F
from minitl import Tensor, viz
from minitl.nn import Conv2D, Dense, GlobalAvgPool2D, MaxPool2D, Sequential, manual_seed
from minitl.optim import SGD

SIZE, SQUARE = 32, 8


def grad_cam_by_hand(model, x, layer, class_index):
    """The formula, step by step, for one image x (H, W, C); returns the h×w map."""
    h = Tensor(x[None], requires_grad=True)   # so that every layer records its graph
    for m in model.layers():                  # the leaf layers, in order
        h = m(h)
        if m.name == layer:
            A = h.retain_grad()               # keep ∂y_c/∂A after backward
    h[0, class_index].backward()              # y_c, the class score (a logit)
    model.zero_grad()
    w = A.grad.mean(axis=(1, 2))              # (1, K): the spatial mean of the gradient
    return np.maximum((A.numpy() * w[:, None, None, :]).sum(axis=3), 0)[0]


def compare(model, x, layer, c):
    """minitl.viz.grad_cam against the step-by-step version; returns the heat map."""
    small = grad_cam_by_hand(model, x, layer, c)
    by_hand = viz.upsample(small[None], *x.shape[:2])[0]
    by_hand /= max(by_hand.max(), 1e-12)
    cam = viz.grad_cam(model, x, class_index=c, layer=layer)
    print(f"class {c}: {layer}'s {small.shape} map by hand (retain_grad), upsampled to {cam.shape}, "
          f"vs minitl.viz.grad_cam: max difference {np.abs(by_hand - cam).max():.1e}")
    return cam


# ---- the synthetic task -----------------------------------------------------------
def make_images(n, rng):
    """n noisy gray images with a red (class 0) or blue (class 1) square and a white one elsewhere."""
    x = rng.normal(0.5, 0.08, (n, SIZE, SIZE, 3))
    y = rng.integers(0, 2, n)
    corners = []
    for i in range(n):
        while True:
            (r, c), (r2, c2) = rng.integers(0, SIZE - SQUARE, (2, 2))
            if abs(r - r2) >= SQUARE or abs(c - c2) >= SQUARE:
                break
        x[i, r:r + SQUARE, c:c + SQUARE] = (0.9, 0.2, 0.2) if y[i] == 0 else (0.2, 0.2, 0.9)
        x[i, r2:r2 + SQUARE, c2:c2 + SQUARE] = 0.9
        corners.append((r, c))
    return ((x - 0.5) / 0.25).astype(np.float32), y, corners


def small_cnn():
    return Sequential([
        Conv2D(8, 3, padding="same", activation="relu", kernel_initializer="he_normal", name="conv1"),
        MaxPool2D(2, name="pool1"),
        Conv2D(16, 3, padding="same", activation="relu", kernel_initializer="he_normal", name="conv2"),
        MaxPool2D(2, name="pool2"),
        Conv2D(16, 3, padding="same", activation="relu", kernel_initializer="he_normal", name="conv3"),
        GlobalAvgPool2D(name="gap"),
        Dense(2, name="scores"),
    ], name="small_cnn", input_shape=(SIZE, SIZE, 3))


def train(model, x, y, epochs, lr=0.05, batch=32):
    opt = SGD(model.parameters(), lr=lr, momentum=0.9)
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(y))
        for i in range(0, len(y), batch):
            idx = order[i:i + batch]
            loss = F.softmax_cross_entropy(model(Tensor(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.4f}")


def save_grid(images, cams, path, scale=4):
    """Top row the images, bottom row the heat maps over them, each enlarged `scale` times."""
    tiles = [[viz.overlay(img, np.zeros(img.shape[:2]), alpha=0) for img in images],
             [viz.overlay(img, cam) for img, cam in zip(images, cams)]]
    rows = [np.concatenate(row, axis=1) for row in tiles]
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST).save(path)


def synthetic(args):
    rng = np.random.default_rng(0)
    n_train, epochs = (192, 2) if args.quick else (256, 3)
    x, y, _ = make_images(n_train, rng)
    xt, yt, corners = make_images(64, rng)
    manual_seed(0)
    model = small_cnn()
    start = time.perf_counter()
    train(model, x, y, epochs)
    model.eval()
    accuracy = (model(Tensor(xt)).numpy().argmax(axis=1) == yt).mean()
    print(f"trained in {time.perf_counter() - start:.1f} s; test accuracy {accuracy:.3f}")

    compare(model, xt[0], "conv3", int(yt[0]))

    cams = viz.grad_cam(model, xt, layer="conv3")           # each image's predicted class
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in cams]
    hits = sum(r <= i < r + SQUARE and c <= j < c + SQUARE for (i, j), (r, c) in zip(peaks, corners))
    print(f"heat-map peak on the coloured square in {hits} of {len(xt)} test images")
    save_grid(xt[:8] * 0.25 + 0.5, cams[:8], args.out)


def from_run(args):
    from minitl.data import load_image
    from minitl.transfer import load_run
    model, record = load_run(args.run)
    size = tuple(record["image_size"])
    x = load_image(args.image, size, preprocess=record.get("preprocessing", "caffe"))
    scores = model(Tensor(x[None])).numpy()[0]
    c = int(scores.argmax())
    print(f"{args.image}: predicted {record['classes'][c]} (logit {scores[c]:.3f})")
    cam = compare(model, x, args.layer, c)
    rgb = np.clip(load_image(args.image, size, preprocess=None), 0, 255).astype(np.uint8)
    save_grid([rgb], [cam], args.out, scale=max(1, 256 // size[0]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="less training (used by the tests)")
    parser.add_argument("--out", default="gradcam.png", help="the PNG to write (default gradcam.png)")
    parser.add_argument("--run", metavar="DIR", help="explain the model of this run folder (needs --image)")
    parser.add_argument("--image", metavar="FILE", help="the image to explain with --run")
    parser.add_argument("--layer", default="block5_conv3", help="the layer for --run (default block5_conv3)")
    args = parser.parse_args(argv)
    if args.run and not args.image:
        parser.error("--run needs --image FILE")
    from_run(args) if args.run else synthetic(args)
    print(f"heat maps drawn in {args.out}")


if __name__ == "__main__":
    main()
