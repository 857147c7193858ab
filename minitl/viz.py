"""Pictures of what the engine computes: the graph behind a tensor, and Grad-CAM heat maps.

    to_dot(t)             the graph that produced t, as Graphviz DOT text
    render(dot, path)     DOT -> SVG / PNG / PDF with Graphviz's ``dot`` program
    grad_cam(model, x)    where the model looked: relu(Σ_k w_k A_k), w_k = mean_ij ∂y_c/∂A_k[i, j]
    upsample(maps, H, W)  bilinear resize of (N, h, w) maps
    overlay(img, cam)     the heat map blended over the image, as RGB uint8
"""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from minitl.backend import get_array_module, to_device, to_numpy
from minitl.errors import MinitlError, ShapeError
from minitl.tensor import Tensor, no_grad

# ---- the computational graph ----------------------------------------------------

_INSTALL_HINT = ("Install Graphviz: `apt-get install graphviz` (Debian, Ubuntu), `brew install graphviz` "
                 "(macOS) or `conda install graphviz`. Without it, paste the .dot file's text into an "
                 "online Graphviz viewer.")


def _quote(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensor_label(t):
    shape = "(" + ", ".join(str(n) for n in t.shape) + ("," if t.ndim == 1 else "") + ")"
    label = f"{shape} {t.dtype}"
    return f"{t.name}\n{label}" if t.name else label


def to_dot(tensor, path=None):
    """Graphviz DOT text of the graph that produced ``tensor``; also written to ``path`` if given.

    Tensors are ellipses labelled with name (if set), shape and dtype: the output is
    orange, leaves that require a gradient (parameters, inputs) blue, constants grey.
    Ops are boxes named by their Function class. Edges run input → op → output.
    Draw the graph before ``backward()``, which frees it (or use backward(retain_graph=True)).
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_dot needs a Tensor, got {type(tensor).__name__}")
    tensor_ids, op_ids = {}, {}
    nodes, edges, stack = [], [], []

    def tensor_node(t):
        key = id(t)
        if key not in tensor_ids:
            tensor_ids[key] = f"t{len(tensor_ids)}"
            if t is tensor:
                color = "#ffd8a8"
            elif t.is_leaf and t.requires_grad:
                color = "#a5d8ff"
            elif t.is_leaf:
                color = "#e9ecef"
            else:
                color = "#ffffff"
            nodes.append(f'  {tensor_ids[key]} [label={_quote(_tensor_label(t))}, shape=ellipse, '
                         f'style=filled, fillcolor="{color}"];')
            stack.append(t)
        return tensor_ids[key]

    tensor_node(tensor)
    while stack:  # iterative, so deep graphs never reach Python's recursion limit
        t = stack.pop()
        fn = t._creator
        if fn is None:
            continue
        if fn.inputs is None:
            raise MinitlError(f"to_dot: the graph behind this tensor (made by {type(fn).__name__}) was freed "
                              f"by backward(); draw it before backward(), or call backward(retain_graph=True)")
        if id(fn) in op_ids:
            continue
        op = op_ids[id(fn)] = f"f{len(op_ids)}"
        nodes.append(f'  {op} [label={_quote(type(fn).__name__)}, shape=box, style="rounded,filled", '
                     f'fillcolor="#d3f9d8"];')
        edges.append(f"  {op} -> {tensor_ids[id(t)]};")
        for x in fn.inputs:
            edges.append(f"  {tensor_node(x)} -> {op};")
    text = "\n".join(["digraph minitl {", '  node [fontname="Helvetica", fontsize=10];', *nodes, *edges, "}"])
    text += "\n"
    if path is not None:
        Path(path).write_text(text)
    return text


def render(dot_or_tensor, path, format=None):
    """Draw a graph with Graphviz's ``dot``: a Tensor, DOT text or a .dot file -> ``path``.

    ``format`` ('svg', 'png', 'pdf') defaults to the suffix of ``path``, else 'png'.
    The DOT text is also kept beside the picture as ``path`` with suffix .dot.
    Raises MinitlError with install instructions when ``dot`` is not on PATH.
    Returns ``path``.
    """
    path = Path(path)
    if isinstance(dot_or_tensor, Tensor):
        text = to_dot(dot_or_tensor)
    elif isinstance(dot_or_tensor, (str, os.PathLike)) and "{" not in str(dot_or_tensor):
        text = Path(dot_or_tensor).read_text()
    else:
        text = str(dot_or_tensor)
    fmt = (format or path.suffix.lstrip(".") or "png").lower()
    dot_file = path.with_suffix(".dot")
    if dot_file != path:
        dot_file.write_text(text)
    exe = shutil.which("dot")
    if exe is None:
        raise MinitlError(f"render: Graphviz's `dot` program is not on PATH, so {path} cannot be drawn. "
                          f"{_INSTALL_HINT} The DOT text is in {dot_file}.")
    done = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise MinitlError(f"render: `dot -T{fmt}` failed for {path}: {done.stderr.strip()}")
    return path


# ---- Grad-CAM -----------------------------------------------------------------


def upsample(maps, height, width):
    """Bilinear resize of (N, h, w) to (N, height, width), sampling at pixel centres."""
    _n, h, w = maps.shape

    def grid(size, out):
        pos = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, size - 1)
        return lo, hi, pos - lo

    r0, r1, fr = grid(h, height)
    c0, c1, fc = grid(w, width)
    top = maps[:, r0][:, :, c0] * (1 - fc) + maps[:, r0][:, :, c1] * fc
    bottom = maps[:, r1][:, :, c0] * (1 - fc) + maps[:, r1][:, :, c1] * fc
    return top * (1 - fr)[:, None] + bottom * fr[:, None]


def grad_cam(model, x, class_index=None, layer="block5_conv3"):
    """Grad-CAM (Selvaraju et al., 2017): where in the image the score of a class comes from.

    ``model`` runs its leaf layers in order (``model.layers()``, as Sequential and VGG16
    do, and the transfer model Sequential([base, head])); ``x`` is one preprocessed
    image (H, W, C) or a batch (N, H, W, C). With A the output of ``layer`` (h, w, K)
    and y_c the score of class c (the logit, before any softmax):

        w_k = 1/(h·w) Σ_ij ∂y_c/∂A_k[i, j]      cam = relu(Σ_k w_k A_k)

    upsampled bilinearly to (H, W) and divided by its maximum. ``class_index``
    defaults to the predicted class. Returns a NumPy array (H, W), or (N, H, W) for
    a batch, with values in [0, 1]. The model's parameters, gradients and
    train/eval mode are left as they were.
    """
    data = x.data if isinstance(x, Tensor) else get_array_module(x).asarray(x, dtype=np.float32)
    single = data.ndim == 3
    if single:
        data = data[None]
    if data.ndim != 4:
        raise ShapeError(f"grad_cam: x must be (H, W, C) or (N, H, W, C), got shape {tuple(data.shape)}")
    layers = model.layers()
    names = [m.name for m in layers]
    if layer not in names:
        raise MinitlError(f"grad_cam: the model has no layer {layer!r}; its layers are {names}")
    cut = names.index(layer)

    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad) for p in model.parameters()]
    if params:  # the image goes where the weights are
        data = to_device(data, params[0][0].device)
    try:
        model.eval()
        for p, _ in params:
            p.requires_grad = False
        with no_grad():
            a = Tensor(data)
            for m in layers[:cut + 1]:
                a = m(a)
        if a.ndim != 4:
            raise ShapeError(f"grad_cam: layer {layer!r} gives shape {a.shape}; it needs a (N, h, w, K) map")
        # A becomes a leaf: backward stops there, and A.grad is ∂y_c/∂A
        a = Tensor(a.data, requires_grad=True)
        y = a
        for m in layers[cut + 1:]:
            y = m(y)
        if y.ndim != 2:
            raise ShapeError(f"grad_cam: the model's output has shape {y.shape}; it needs (N, classes)")
        scores = y.numpy()
        n = len(data)
        c = scores.argmax(axis=1) if class_index is None else np.broadcast_to(to_numpy(class_index), (n,))
        if (c < 0).any() or (c >= y.shape[1]).any():
            raise MinitlError(f"grad_cam: class_index {class_index} is outside the model's {y.shape[1]} classes")
        xp = get_array_module(y.data)
        y[xp.asarray(np.arange(n)), xp.asarray(c)].sum().backward()
    finally:
        for p, flag in params:
            p.requires_grad = flag
        for m, flag in modes:
            m.training = flag

    A, g = to_numpy(a.data).astype(np.float64), to_numpy(a.grad).astype(np.float64)
    weights = g.mean(axis=(1, 2))                                  # (N, K)
    cam = np.maximum((A * weights[:, None, None, :]).sum(axis=3), 0)  # (N, h, w)
    cam = upsample(cam, data.shape[1], data.shape[2])
    top = cam.max(axis=(1, 2), keepdims=True)
    cam = np.divide(cam, top, out=np.zeros_like(cam), where=top > 0)
    cam = cam.astype(np.float32)
    return cam[0] if single else cam


def _jet(v):
    """A blue → cyan → yellow → red colour map: values in [0, 1] -> RGB in [0, 1]."""
    v = np.clip(v, 0, 1)[..., None]
    return np.clip(1.5 - np.abs(4 * v - np.array([3.0, 2.0, 1.0])), 0, 1)


def overlay(image, cam, alpha=0.45):
    """The heat map ``cam`` (H, W) in [0, 1] blended over ``image`` (H, W, 3) or (H, W): RGB uint8.

    ``image`` is either uint8 or floats, which are stretched to 0..255.
    """
    image, cam = to_numpy(image), to_numpy(cam)  # NumPy or CuPy arrays
    img = image.astype(np.float64)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[:2] != np.shape(cam):
        raise ShapeError(f"overlay: image {img.shape[:2]} and heat map {np.shape(cam)} differ in size")
    if image.dtype != np.uint8:
        lo, hi = img.min(), img.max()
        img = (img - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(img)
    blend = (1 - alpha) * img + alpha * 255 * _jet(np.asarray(cam, dtype=np.float64))
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)


__all__ = ["grad_cam", "overlay", "render", "to_dot", "upsample"]
