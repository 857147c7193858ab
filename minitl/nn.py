"""Layers: y = f(X; W) as modules that own their parameters W.

A ``Module`` records the parameters and sub-modules assigned to it, in order.
Leaf layers (``Conv2D``, ``Dense``, ...) create their weights when they first see
an input shape (``build``), so input channels never need to be given. Layer names
follow Keras (``block1_conv1``, ``fc1``), which is how weight files are matched.
"""
import math
from collections import OrderedDict

import numpy as np

from minitl import functional as F
from minitl.backend import device_of, to_device, to_numpy
from minitl.conv import _pair, output_hw, padding_pairs, resolve_padding
from minitl.errors import ShapeError, WeightsError
from minitl.ops import add, concatenate
from minitl.tensor import Tensor

__all__ = [
    "ACTIVATIONS",
    "Add",
    "AvgPool2D",
    "BatchNormalization",
    "Buffer",
    "Concatenate",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "Layer",
    "MaxPool2D",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "ZeroPadding2D",
    "glorot_uniform",
    "he_normal",
    "manual_seed",
]

_rng = np.random.default_rng(0)


def manual_seed(seed):
    """Seed the generator that initialises weights and draws dropout masks."""
    global _rng
    _rng = np.random.default_rng(seed)


def he_normal(shape, fan_in, rng):
    """Keras' he_normal: W = (σ / c)·z, σ = √(2 / fan_in), z ~ N(0, 1) redrawn until |z| ≤ 2.

    c = 0.87962566103423978 is the standard deviation of that truncated z, so
    Var(W) = 2 / fan_in exactly and |W| ≤ 2σ / c.
    """
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978  # Keras' truncated-normal correction
    w = rng.standard_normal(shape, dtype=np.float32)
    while (bad := np.abs(w) > 2).any():
        w[bad] = rng.standard_normal(int(bad.sum()), dtype=np.float32)
    return w * np.float32(std)


def glorot_uniform(shape, fan_in, fan_out, rng):
    """U(-a, a) with a = √(6 / (fan_in + fan_out))."""
    a = np.float32(math.sqrt(6.0 / (fan_in + fan_out)))
    return (rng.random(shape, dtype=np.float32) * 2 - 1) * a


ACTIVATIONS = {None: None, "linear": None, "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh,
               "softmax": F.softmax}


def _activation(name):
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; use one of {sorted(k for k in ACTIVATIONS if k)}")
    return ACTIVATIONS[name]


def _window_output_hw(size, window, strides, padding):
    """(Ho, Wo) of a convolution or pooling window over an (H, W) input, as the op computes it."""
    strides = _pair(strides, "strides")
    return output_hw(size, window, strides, resolve_padding(padding, size, window, strides))


class Parameter(Tensor):
    """A tensor that a module trains: requires_grad=True unless frozen."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)


class Buffer(Tensor):
    """A tensor that a module keeps, saves and loads with its weights but never trains
    (BatchNormalization's moving statistics): no gradient, never given to an optimizer,
    untouched by freeze() and unfreeze()."""

    def __init__(self, data):
        super().__init__(data, requires_grad=False)


class Module:
    """Base class: holds named parameters, buffers and sub-modules, in the order they were assigned.

    ``training`` (train() / eval()) selects the mode of layers that differ between
    training and inference (Dropout, BatchNormalization); ``trainable`` is False for a
    module that freeze() froze: a frozen BatchNormalization runs in inference mode, as
    Keras' does when trainable=False.
    """

    default_name = None  # Keras' name for the layer class; else the class name in lower case

    def __init__(self, name=None):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        self.name = name or self.default_name or type(self).__name__.lower()
        self.auto_named = name is None
        self.training = True
        self.trainable = True

    def __setattr__(self, key, value):
        if isinstance(value, Parameter):
            self._params[key] = value
        elif isinstance(value, Buffer):
            self._buffers[key] = value
        elif isinstance(value, Module):
            self._unique_name(key, value)
            self._modules[key] = value
        object.__setattr__(self, key, value)

    def _unique_name(self, key, layer):
        """Weight files list every layer by name, nested ones too, so names must be unique
        across the model: a layer named by default (``layer`` or one inside it) gets Keras'
        next free suffix (dense, dense_1, ...); a name given twice is an error."""
        replaced = self._modules.get(key)
        skip = {id(m) for m in replaced.modules()} if replaced is not None else set()
        skip |= {id(m) for m in layer.modules()}
        taken = {m.name for m in self.modules() if id(m) not in skip and m is not self}
        for m in layer.modules():
            if m.name in taken:
                if not m.auto_named:
                    raise ValueError(f"{self.name}: two layers are named {m.name!r} (the second in {key}); "
                                     f"parameter names and weight files need unique names")
                base, k = m.name, 1
                while f"{base}_{k}" in taken:
                    k += 1
                m.name = f"{base}_{k}"
            taken.add(m.name)

    def __repr__(self):
        shapes = ", ".join(f"{k} {p.shape}" for k, p in self._params.items())
        lines = [f"{type(self).__name__}(name={self.name!r}{', ' + shapes if shapes else ''})"]
        for m in self._modules.values():
            lines += ["  " + line for line in repr(m).splitlines()]
        return "\n".join(lines)

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    # ---- traversal -------------------------------------------------------------
    def named_parameters(self, prefix=""):
        for key, p in self._params.items():
            yield prefix + key, p
        for key, m in self._modules.items():
            yield from m.named_parameters(prefix + m.name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for key, b in self._buffers.items():
            yield prefix + key, b
        for key, m in self._modules.items():
            yield from m.named_buffers(prefix + m.name + ".")

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def modules(self):
        yield self
        for m in self._modules.values():
            yield from m.modules()

    def layers(self):
        """The leaf layers in model order (what weight files are matched against)."""
        return [m for m in self.modules() if not m._modules]

    def get_layer(self, name):
        for m in self.modules():
            if m.name == name:
                return m
        raise KeyError(f"no layer named {name!r}; layers: {[m.name for m in self.layers()]}")

    # ---- modes -----------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def freeze(self):
        """Stop training these parameters (requires_grad=False); the modules become non-trainable."""
        for m in self.modules():
            m.trainable = False
        for p in self.parameters():
            p.requires_grad = False
            p.grad = None
        return self

    def unfreeze(self):
        for m in self.modules():
            m.trainable = True
        for p in self.parameters():
            p.requires_grad = True
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device):
        """Move every parameter (and its gradient) and buffer to 'cpu' or 'gpu', in place."""
        for p in self.parameters():
            p.data = to_device(p.data, device)
            if p.grad is not None:
                p.grad = to_device(p.grad, device)
        for b in self.buffers():
            b.data = to_device(b.data, device)
        return self

    # ---- state -----------------------------------------------------------------
    def _named_state(self):
        return OrderedDict([*self.named_parameters(), *self.named_buffers()])

    def state_dict(self):
        """{'layer.weight': NumPy array} for every parameter, then every buffer."""
        return OrderedDict((k, to_numpy(p.data).copy()) for k, p in self._named_state().items())

    def load_state_dict(self, state, strict=True):
        """Copy arrays (or Tensors, or nested lists) into the parameters; shapes are checked first,
        nothing changes on error."""
        state = {k: to_numpy(v.data if isinstance(v, Tensor) else v) for k, v in state.items()}
        own = self._named_state()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise WeightsError(f"state dict does not fit the model: missing {missing}, unexpected {unexpected}")
        for k, p in own.items():
            if k in state and tuple(state[k].shape) != p.shape:
                raise WeightsError(f"state dict: {k} has shape {tuple(state[k].shape)}, the model expects {p.shape}")
        for k, p in own.items():
            if k in state:
                p.data = to_device(state[k].astype(p.dtype), p.device)
        return missing, unexpected

    # ---- description -------------------------------------------------------------
    def layer_shapes(self, input_shape):
        """[(leaf layer, its output shape)] in ``layers()`` order for an input of ``input_shape``
        (None for the batch), the sub-modules applied one after the other, as Sequential runs
        them; a model that branches overrides this. Builds the layers that are not built."""
        if not self._modules:
            return [(self, self.output_shape(input_shape))]
        rows = []
        for m in self._modules.values():
            rows += m.layer_shapes(rows[-1][1] if rows else input_shape)
        return rows

    def count_params(self):
        """Every weight, trainable or not (parameters and buffers), as Keras' count_params."""
        return sum(p.size for p in self.parameters()) + sum(b.size for b in self.buffers())

    def summary(self, input_shape=None, print_fn=print):
        """A Keras-like table: layer, type, output shape, parameters, and the totals."""
        shape = input_shape or getattr(self, "input_shape", None)
        if shape is None:
            raise ShapeError("summary() needs an input shape: pass input_shape=(H, W, C)")
        rows = []
        for layer, out_shape in self.layer_shapes((None,) + tuple(shape)):
            if not layer.built:
                raise ShapeError(f"layer {layer.name} is not built yet")
            rows.append((layer.name, type(layer).__name__, str(out_shape), f"{layer.count_params():,}"))
        head = ("Layer", "Type", "Output shape", "Param #")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
        line = "  ".join(f"{{:<{w}}}" for w in widths[:3]) + f"  {{:>{widths[3]}}}"
        rule = "-" * (sum(widths) + 6)
        total = self.count_params()
        trainable = sum(p.size for p in self.parameters() if p.requires_grad)
        text = [f'Model: "{self.name}"', rule, line.format(*head), rule]
        text += [line.format(*r) for r in rows]
        text += [rule, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                 f"Non-trainable params: {total - trainable:,}"]
        print_fn("\n".join(text))
        return "\n".join(text)


class Layer(Module):
    """A leaf layer: no sub-modules, weights made by ``build`` from the first input shape."""

    built = True

    def output_shape(self, input_shape):
        """The output shape for ``input_shape`` (None for the batch); builds the layer if needed."""
        return input_shape

    @property
    def weights(self):
        """The layer's weights in Keras order: its parameters (kernel, bias), then its buffers."""
        return [*self._params.values(), *self._buffers.values()]

    def _build_for(self, x):
        """Create the weights for input ``x`` (its last axis), on x's device."""
        self.build(x.shape[-1])
        self.to(device_of(x.data if isinstance(x, Tensor) else x))

    def _create_weights(self, shape, fan_in, fan_out):
        """A kernel of ``shape`` from the layer's initialiser and, with use_bias, a zero bias."""
        if self.kernel_initializer == "he_normal":
            w = he_normal(shape, fan_in, _rng)
        elif self.kernel_initializer == "glorot_uniform":
            w = glorot_uniform(shape, fan_in, fan_out, _rng)
        else:
            raise ValueError(f"layer {self.name}: unknown kernel_initializer {self.kernel_initializer!r}; "
                             f"use 'glorot_uniform' or 'he_normal'")
        self.kernel = Parameter(w.astype(np.float32))
        if self.use_bias:
            self.bias = Parameter(np.zeros(shape[-1], np.float32))
        self.built = True


class Conv2D(Layer):
    """y = activation(conv2d(x, kernel) + bias), kernel (kh, kw, C_in, filters), as Keras' Conv2D."""
    default_name = "conv2d"

    def __init__(self, filters, kernel_size=3, strides=1, padding="valid", activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", name=None, input_channels=None):
        super().__init__(name)
        self.filters, self.use_bias = filters, use_bias
        self.kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.strides, self.padding = strides, padding
        self.activation = _activation(activation)
        self.kernel_initializer = kernel_initializer
        self.built = False
        if input_channels is not None:
            self.build(input_channels)

    def build(self, channels):
        kh, kw = self.kernel_size
        self._create_weights((kh, kw, channels, self.filters), kh * kw * channels, kh * kw * self.filters)

    def output_shape(self, input_shape):
        n, h, w, c = input_shape
        if not self.built:
            self.build(c)
        return (n, *_window_output_hw((h, w), self.kernel_size, self.strides, self.padding), self.filters)

    def forward(self, x):
        if not self.built:
            if x.ndim != 4:
                raise ShapeError(f"layer {self.name}: input must be (N, H, W, C), got shape {x.shape}")
            self._build_for(x)
        bias = self.bias if self.use_bias else None
        if self.activation is F.relu:                   # fused: one pass for + bias and ReLU
            return F.conv2d(x, self.kernel, bias, self.strides, self.padding, activation="relu")
        y = F.conv2d(x, self.kernel, bias, self.strides, self.padding)
        return self.activation(y) if self.activation else y


class Dense(Layer):
    """y = activation(x @ kernel + bias), kernel (in, units), as Keras' Dense."""
    default_name = "dense"

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 name=None, input_dim=None):
        super().__init__(name)
        self.units, self.use_bias = units, use_bias
        self.activation = _activation(activation)
        self.kernel_initializer = kernel_initializer
        self.built = False
        if input_dim is not None:
            self.build(input_dim)

    def build(self, input_dim):
        self._create_weights((input_dim, self.units), input_dim, self.units)

    def output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ShapeError(f"layer {self.name}: Dense needs a flat (N, features) input, got {input_shape}")
        if not self.built:
            self.build(input_shape[-1])
        return input_shape[0], self.units

    def forward(self, x):
        if not self.built:
            self._build_for(x)
        y = F.dense(x, self.kernel, self.bias if self.use_bias else None)
        return self.activation(y) if self.activation else y


class DepthwiseConv2D(Layer):
    """y = activation(depthwise_conv2d(x, kernel) + bias), kernel (kh, kw, C, depth_multiplier) and
    bias (C·depth_multiplier,), as Keras' DepthwiseConv2D; output channel c·depth_multiplier + m."""
    default_name = "depthwise_conv2d"

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, use_bias=True,
                 activation=None, name=None, kernel_initializer="glorot_uniform"):
        super().__init__(name)
        self.kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.strides, self.padding = strides, padding
        self.depth_multiplier, self.use_bias = depth_multiplier, use_bias
        self.activation = _activation(activation)
        self.kernel_initializer = kernel_initializer
        self.built = False

    def build(self, channels):
        kh, kw = self.kernel_size
        m = self.depth_multiplier
        # Keras' fans of a (kh, kw, C, M) kernel: kh·kw·C in, kh·kw·M out
        self._create_weights((kh, kw, channels, m), kh * kw * channels, kh * kw * m)
        self.kernel.name = "depthwise_kernel"
        if self.use_bias:
            self.bias = Parameter(np.zeros(channels * m, np.float32))

    def output_shape(self, input_shape):
        n, h, w, c = input_shape
        if not self.built:
            self.build(c)
        return (n, *_window_output_hw((h, w), self.kernel_size, self.strides, self.padding),
                c * self.depth_multiplier)

    def forward(self, x):
        if not self.built:
            if x.ndim != 4:
                raise ShapeError(f"layer {self.name}: input must be (N, H, W, C), got shape {x.shape}")
            self._build_for(x)
        y = F.depthwise_conv2d(x, self.kernel, self.strides, self.padding)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation else y


class BatchNormalization(Layer):
    """y = γ · (x − μ) / √(σ² + ε) + β per channel (``axis``), as Keras' BatchNormalization.

    Weights in Keras' order: gamma (if scale) and beta (if center), trained; moving_mean
    and moving_variance, Buffers that are saved and loaded but never trained. In training
    mode (train() and not frozen) μ and σ² are the batch's mean and biased variance over
    every other axis, and the moving statistics follow
    moving = moving · momentum + batch · (1 − momentum); in inference mode (eval(), or
    frozen, as Keras when trainable=False) μ and σ² are the moving statistics.
    ``inplace=True``: in inference mode, when no graph is recorded (``no_grad``, or a frozen
    model on an input without gradient), y overwrites the input's array, as PyTorch's
    ``ReLU(inplace=True)`` does; for a layer whose input nothing else uses (a convolution's
    output inside a model), it saves an array and its memory traffic.
    """
    default_name = "batch_normalization"

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, name=None, inplace=False):
        super().__init__(name)
        self.axis, self.momentum, self.epsilon = axis, momentum, epsilon
        self.center, self.scale, self.inplace = center, scale, inplace
        self.built = False

    def build(self, channels):
        if self.scale:
            self.gamma = Parameter(np.ones(channels, np.float32))
            self.gamma.name = "gamma"
        if self.center:
            self.beta = Parameter(np.zeros(channels, np.float32))
            self.beta.name = "beta"
        self.moving_mean = Buffer(np.zeros(channels, np.float32))
        self.moving_mean.name = "moving_mean"
        self.moving_variance = Buffer(np.ones(channels, np.float32))
        self.moving_variance.name = "moving_variance"
        self.built = True

    def output_shape(self, input_shape):
        if not self.built:
            self.build(input_shape[self.axis])
        return input_shape

    def forward(self, x):
        if not self.built:
            self.build(x.shape[self.axis])
            self.to(device_of(x.data if isinstance(x, Tensor) else x))
        return F.batch_norm(x, self.gamma if self.scale else None, self.beta if self.center else None,
                            self.moving_mean, self.moving_variance, training=self.training and self.trainable,
                            momentum=self.momentum, epsilon=self.epsilon, axis=self.axis, inplace=self.inplace)


class MaxPool2D(Layer):
    default_name = "max_pooling2d"

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None):
        super().__init__(name)
        self.pool_size, self.strides, self.padding = pool_size, strides, padding

    def output_shape(self, input_shape):
        n, h, w, c = input_shape
        pool = _pair(self.pool_size, "pool")
        return (n, *_window_output_hw((h, w), pool, pool if self.strides is None else self.strides, self.padding), c)

    def forward(self, x):
        return F.max_pool2d(x, self.pool_size, self.strides, self.padding)


class AvgPool2D(MaxPool2D):
    default_name = "average_pooling2d"

    def forward(self, x):
        return F.avg_pool2d(x, self.pool_size, self.strides, self.padding)


class GlobalAvgPool2D(Layer):
    default_name = "global_average_pooling2d"

    def output_shape(self, input_shape):
        return input_shape[0], input_shape[3]

    def forward(self, x):
        return F.global_avg_pool2d(x)


class GlobalMaxPool2D(Layer):
    """(N, H, W, C) -> (N, C): the maximum over H and W (a max-pool whose window is the whole map)."""
    default_name = "global_max_pooling2d"

    def output_shape(self, input_shape):
        return input_shape[0], input_shape[3]

    def forward(self, x):
        return F.flatten(F.max_pool2d(x, tuple(x.shape[1:3])))


class Flatten(Layer):
    """(N, H, W, C) -> (N, H·W·C) in Keras' (h, w, c) order."""
    default_name = "flatten"

    def output_shape(self, input_shape):
        return input_shape[0], int(np.prod(input_shape[1:]))

    def forward(self, x):
        return F.flatten(x)


class ReLU(Layer):
    """y = max(x, 0), or min(max(x, 0), max_value) as Keras' ReLU(max_value) (ReLU(6.0): ReLU6).
    ``inplace=True`` overwrites the input when no graph is recorded (see BatchNormalization)."""
    default_name = "re_lu"

    def __init__(self, max_value=None, name=None, inplace=False):
        super().__init__(name)
        if max_value is not None and not max_value > 0:
            raise ValueError(f"ReLU: max_value must be positive or None, got {max_value}")
        self.max_value = None if max_value is None else float(max_value)
        self.inplace = inplace

    def forward(self, x):
        if self.max_value is None:
            return F.relu(x, self.inplace)
        return F.clipped_relu(x, self.max_value, self.inplace)


class ZeroPadding2D(Layer):
    """Zero rows and columns around (N, H, W, C) as Keras' ZeroPadding2D: padding an int,
    (ph, pw) or ((top, bottom), (left, right))."""
    default_name = "zero_padding2d"

    def __init__(self, padding=(1, 1), name=None):
        super().__init__(name)
        self.padding = padding_pairs(padding)

    def output_shape(self, input_shape):
        n, h, w, c = input_shape
        top, bottom, left, right = self.padding
        return n, h + top + bottom, w + left + right, c

    def forward(self, x):
        return F.zero_padding2d(x, ((self.padding[0], self.padding[1]), (self.padding[2], self.padding[3])))


class Add(Layer):
    """The sum of a list of tensors of one shape, as Keras' Add: ``Add()([a, b])``, added in
    Keras' order. ``inplace=True``: when no graph is recorded the sum is built in the second
    tensor's array (``b`` in ``Add()([shortcut, b])``), which must not be used after."""
    default_name = "add"

    def __init__(self, name=None, inplace=False):
        super().__init__(name)
        self.inplace = inplace

    def output_shape(self, input_shapes):
        return _merge_shapes(self, input_shapes)

    def forward(self, xs):
        _check_merge(self, xs)
        y = add(xs[0], xs[1], self.inplace)
        for x in xs[2:]:
            y = add(x, y, self.inplace)
        return y


class Concatenate(Layer):
    """A list of tensors joined along ``axis`` (channels by default), as Keras' Concatenate."""
    default_name = "concatenate"

    def __init__(self, axis=-1, name=None):
        super().__init__(name)
        self.axis = axis

    def output_shape(self, input_shapes):
        shapes = [tuple(s) for s in input_shapes]
        axis = self.axis % len(shapes[0])
        _merge_shapes(self, [s[:axis] + s[axis + 1:] for s in shapes])
        return shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:]

    def forward(self, xs):
        _check_merge(self, xs)
        return concatenate(list(xs), axis=self.axis)


def _check_merge(layer, xs):
    if not isinstance(xs, (list, tuple)) or len(xs) < 2:
        raise ShapeError(f"layer {layer.name}: {type(layer).__name__} is called on a list of at least two "
                         f"tensors, got {type(xs).__name__}")


def _merge_shapes(layer, shapes):
    shapes = [tuple(s) for s in shapes]
    if len({len(s) for s in shapes}) != 1 or any(
            len({d for d in dims if d is not None}) > 1 for dims in zip(*shapes)):
        raise ShapeError(f"layer {layer.name}: input shapes {shapes} do not fit")
    return shapes[0]


class Dropout(Layer):
    """Inverted dropout while training; the identity in eval mode."""
    default_name = "dropout"

    def __init__(self, rate, seed=None, name=None):
        super().__init__(name)
        self.rate = rate
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def forward(self, x):
        return F.dropout(x, self.rate, self.training, self.rng or _rng)


class Sequential(Module):
    """Layers applied one after the other. ``input_shape`` (H, W, C) builds every layer at once."""

    default_name = "sequential"

    def __init__(self, layers=(), name=None, input_shape=None):
        super().__init__(name)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        for layer in layers:
            self.add(layer)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def add(self, layer):
        setattr(self, f"layer{len(self._modules)}", layer)
        return layer

    def build(self, input_shape):
        """Create every layer's weights for inputs of shape (H, W, C); returns the output shape."""
        rows = self.layer_shapes((None,) + tuple(input_shape))
        shape = rows[-1][1] if rows else (None,) + tuple(input_shape)
        self.input_shape = tuple(input_shape)
        return shape

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        """The i-th layer; a slice gives a Sequential of those layers (the same objects)."""
        layers = list(self._modules.values())
        return Sequential(layers[i], name=self.name) if isinstance(i, slice) else layers[i]

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x
