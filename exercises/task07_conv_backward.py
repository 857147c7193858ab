"""Task 7: the convolution backward: dX through col2im, dW and db.

docs/math.md §2 ("Its backward pass"); the engine's code is ``minitl.kernels.col2im`` and
``minitl.conv.Conv2DFunction.backward``, and ``minitl.conv.conv2d_backward_reference`` is the
same as loops. With cols = im2col(x) (task 6), W_mat = W.reshape(kh·kw·C, O) and gY = dL/dY
reshaped to (N·Ho·Wo, O):

    dW = colsᵀ @ gY  (reshaped to W's shape)        db = Σ_{n,i,j} gY
    dX = col2im(gY @ W_matᵀ)

im2col is a linear map cols = P x that copies cells; its backward is the transpose, Pᵀ:
col2im sends each cell of dcols back to the cell of x it was copied from and adds up the
cells that land on the same pixel (a pixel in several windows gets the sum of their
gradients); the cells that came from the padding are dropped. So, for every x and D,
⟨im2col(x), D⟩ = ⟨x, col2im(D)⟩.

What you write (NumPy arrays in, arrays out)
    col2im(dcols, x_shape, kh, kw, stride, pads)      dx (x_shape)
    conv2d_backward(gy, x, w, stride, pads)           (dx, dw, db)

Hints
    - Mirror your im2col: loop over the window cells (a, b) and add (+=, not =) the
      (N, Ho, Wo, C) block of that cell into the same strided slice of a zero x_pad;
      return x_pad without its border.
    - im2col from task 6 gives cols; or import the engine's: from minitl.kernels import im2col
      (its arguments: x, kh, kw, sh, sw, pads).

Run the checks: python -m pytest exercises -k task07
"""


def col2im(dcols, x_shape, kh, kw, stride, pads):
    """The adjoint of im2col: dcols (N·Ho·Wo, kh·kw·C) folded back into dx (x_shape), summing overlaps."""
    raise NotImplementedError("task 7: write col2im")


def conv2d_backward(gy, x, w, stride, pads):
    """(dL/dx, dL/dW, dL/db) for y = conv2d(x, W, b) and gy = dL/dy (N, Ho, Wo, O)."""
    raise NotImplementedError("task 7: write conv2d_backward")
