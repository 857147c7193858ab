"""Task 12's solution: tasks 6-8 as ops, as ``minitl.conv.Conv2DFunction`` and ``MaxPool2DFunction`` are."""
from task06_conv_forward import conv2d_forward
from task07_conv_backward import conv2d_backward
from task08_max_pool_backward import max_pool2d_backward, max_pool2d_forward

from minitl.tensor import Function


class Conv2D(Function):
    def __init__(self, stride, pads):
        self.stride, self.pads = stride, pads

    def forward(self, x, w, b=None):
        self.x, self.w, self.has_bias = x, w, b is not None
        return conv2d_forward(x, w, b, self.stride, self.pads)

    def backward(self, gy):
        dx, dw, db = conv2d_backward(gy, self.x, self.w, self.stride, self.pads)
        return (dx, dw, db) if self.has_bias else (dx, dw)


class MaxPool2D(Function):
    def __init__(self, pool, stride):
        self.pool, self.stride = pool, stride

    def forward(self, x):
        self.x = x
        return max_pool2d_forward(x, self.pool, self.stride)

    def backward(self, gy):
        return max_pool2d_backward(gy, self.x, self.pool, self.stride)
