"""Task 7's solution: ``minitl.kernels.col2im_xp`` (the plain-array twin of the engine's col2im)
and ``minitl.conv.Conv2DFunction.backward``'s im2col branch."""
import numpy as np
from task06_conv_forward import im2col


def col2im(dcols, x_shape, kh, kw, stride, pads):
    (sh, sw), (top, bottom, left, right) = stride, pads
    n, h, w, c = x_shape
    ho, wo = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    blocks = dcols.reshape(n, ho, wo, kh, kw, c)
    dx_pad = np.zeros((n, h + top + bottom, w + left + right, c), dtype=dcols.dtype)
    for a in range(kh):
        for b in range(kw):
            dx_pad[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw, :] += blocks[:, :, :, a, b, :]
    return dx_pad[:, top:top + h, left:left + w, :]


def conv2d_backward(gy, x, w, stride, pads):
    kh, kw, c, o = w.shape
    g = gy.reshape(-1, o)
    dw = (im2col(x, kh, kw, stride, pads).T @ g).reshape(w.shape)
    dx = col2im(g @ w.reshape(kh * kw * c, o).T, x.shape, kh, kw, stride, pads)
    return dx, dw, g.sum(axis=0)
