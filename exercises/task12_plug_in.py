"""Task 12: the whole recipe, the demo's transfer task, run on your own pieces.

Tasks 6, 7 and 8 gave the convolution and max-pooling as array functions; here they become
ops of the engine, ``minitl.tensor.Function`` subclasses like ``minitl.conv.Conv2DFunction``
and ``minitl.conv.MaxPool2DFunction``: forward computes the output from arrays and saves what
backward needs on self; backward(gy) returns one gradient per input of forward.
exercises/recipe.py then puts them in the place of the engine's (every Conv2D and MaxPool2D
layer calls them) and runs the recipe of the article with tasks 10 and 11: the demo's
VGG16, pretrained on five animals, gets a new head, is trained frozen, then its last block
is unfrozen and trained at a tenth of the learning rate, and is evaluated on five other
animals. Your kernels must give the engine's table, to float32 round-off.

What you write
    Conv2D.forward(x, w, b=None), Conv2D.backward(gy)     with task 6's conv2d_forward and
                                                           task 7's conv2d_backward
    MaxPool2D.forward(x), MaxPool2D.backward(gy)          with task 8's functions

Hints
    - The op's settings are on self: self.stride, self.pads (top, bottom, left, right),
      self.pool. forward is called with two inputs (x, w) when the layer has no bias:
      backward must then return two gradients.
    - Return gradients in each input's dtype: the model is float32.

Run the checks: python -m pytest exercises -k task12 (it needs tasks 6, 7, 8, 10 and 11);
python exercises/recipe.py prints both tables.
"""
from minitl.tensor import Function


class Conv2D(Function):
    """y = conv2d(x, W) + b with your task 6 forward and task 7 backward."""

    def __init__(self, stride, pads):
        self.stride, self.pads = stride, pads

    def forward(self, x, w, b=None):
        raise NotImplementedError("task 12: write Conv2D.forward")

    def backward(self, gy):
        raise NotImplementedError("task 12: write Conv2D.backward")


class MaxPool2D(Function):
    """y = the maximum of each window, with your task 8 backward."""

    def __init__(self, pool, stride):
        self.pool, self.stride = pool, stride

    def forward(self, x):
        raise NotImplementedError("task 12: write MaxPool2D.forward")

    def backward(self, gy):
        raise NotImplementedError("task 12: write MaxPool2D.backward")
