"""Optimizers (SGD, Adam) and learning-rate schedules.

Every optimizer moves each trainable parameter by W_t = W_{t−1} − η·step_t, with
step t = 1, 2, … made from that step's gradient g_t, in this order (``Optimizer.step``):

1. Clipping (``clip_norm`` = c): g_t ← g_t · min(1, c / ‖g‖₂), ‖g‖₂ the norm of all the
   trainable parameters' gradients together. The loss gradient alone is clipped; weight
   decay comes after, so it is never scaled down (as PyTorch's ``clip_grad_norm_``
   followed by its SGD with ``weight_decay``).
2. SGD: with weight decay λ, g_t ← g_t + λW (an L2 term, added before momentum, as
   PyTorch does). With momentum μ the velocity is v_t = μ v_{t−1} + g_t with v_0 = 0, so
   v_1 = g_1, the first step is η·g_1, and v_t = Σ_{k<t} μ^k g_{t−k}; the step is v_t, or
   g_t + μ v_t for Nesterov momentum. Without momentum it is g_t.
3. Adam (Kingma & Ba, Algorithm 1): m_t = β1 m_{t−1} + (1 − β1) g_t,
   v_t = β2 v_{t−1} + (1 − β2) g_t², m̂_t = m_t / (1 − β1^t), v̂_t = v_t / (1 − β2^t),
   and the step is m̂_t / (√v̂_t + ε). Weight decay is decoupled (AdamW, as Keras'
   ``weight_decay``): W ← W − ηλW before the step.

Schedules set each group's η from its own initial rate η_0 once per epoch e:
StepLR η_0·γ^⌊e/s⌋, CosineLR η_min + (η_0 − η_min)(1 + cos(πe/T))/2 with
η_min = min_factor·η_0.
"""
import math

from minitl.backend import device_of, to_device, to_numpy


class Optimizer:
    """What every optimizer shares: parameter groups, gradient clipping and per-parameter state.

    ``params`` is an iterable of tensors, or a list of dicts ``{"params": [...], "lr": ...}``
    whose keys override the defaults for that group (e.g. a lower learning rate for
    unfrozen base layers than for a new head). Parameters with requires_grad=False
    or without a gradient are skipped. ``clip_norm`` rescales all gradients together
    so that their global L2 norm is at most that value (Keras' ``global_clipnorm``).
    A subclass writes ``update(p, g, group, state)``: one parameter's step, keeping
    its buffers in the dict ``state``.
    """

    def __init__(self, params, defaults, clip_norm=None):
        if defaults["lr"] <= 0:
            raise ValueError(f"learning rate must be positive, got {defaults['lr']}")
        if clip_norm is not None and clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive, got {clip_norm}")
        if defaults["weight_decay"] < 0:
            raise ValueError(f"weight decay must be 0 or more, got {defaults['weight_decay']}")
        self.defaults = defaults
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for g in groups:
            group = {**self.defaults, **g, "params": list(g["params"])}
            group.setdefault("initial_lr", group["lr"])
            self.param_groups.append(group)
        self.state = {}  # id(param) -> {buffer name: array or number}
        self.clip_norm = clip_norm

    def update(self, p, g, group, state):
        raise NotImplementedError

    def zero_grad(self):
        for p in self._params():
            p.grad = None

    def grad_norm(self):
        """The global L2 norm of the gradients that step() would use."""
        return math.sqrt(sum(float((p.grad * p.grad).sum()) for p in self._params()
                             if p.requires_grad and p.grad is not None))

    def step(self):
        """One update of every trainable parameter that has a gradient.

        The raw gradients are clipped first (``clip_norm``); ``update`` then adds any
        weight decay and makes the step.
        """
        scale = 1.0
        if self.clip_norm is not None:
            norm = self.grad_norm()
            scale = min(1.0, self.clip_norm / norm) if norm > 0 else 1.0
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad and p.grad is not None:
                    g = p.grad if scale == 1.0 else p.grad * scale
                    self.update(p, g, group, self.state.setdefault(id(p), {}))

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """The groups' settings and every parameter's buffers (NumPy arrays), keyed by parameter position."""
        state = {str(i): {k: to_numpy(v) if hasattr(v, "shape") else v for k, v in self.state[id(p)].items()}
                 for i, p in enumerate(self._params()) if self.state.get(id(p))}
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"optimizer": type(self).__name__, "param_groups": groups, "state": state}

    def load_state_dict(self, state):
        kind = state.get("optimizer", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"optimizer state was saved by {kind}, cannot load it into {type(self).__name__}")
        params = self._params()
        if len(state["param_groups"]) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(state['param_groups'])} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        for key, buffers in state["state"].items():
            if int(key) >= len(params):
                raise ValueError(f"optimizer state has buffers for parameter {key}, "
                                 f"this optimizer has {len(params)} parameters")
        for group, saved in zip(self.param_groups, state["param_groups"]):
            group.update(saved)
        self.state = {}
        for key, buffers in state["state"].items():
            p = params[int(key)]
            self.state[id(p)] = {k: self._restore(v, p) for k, v in buffers.items()}

    @staticmethod
    def _restore(value, p):
        """A saved buffer on p's device and in p's dtype; a saved number (Adam's step count) as a number."""
        a = to_numpy(value)  # numpy.asarray refuses CuPy arrays
        if a.ndim == 0:
            return a.item()
        if a.shape != p.shape:
            raise ValueError(f"optimizer buffer of shape {a.shape} does not fit parameter of shape {p.shape}")
        return to_device(a.astype(p.data.dtype), device_of(p.data))

    def to(self, device):
        """Move the buffers with the parameters."""
        self.state = {k: {n: to_device(v, device) if hasattr(v, "shape") else v for n, v in s.items()}
                      for k, s in self.state.items()}
        return self


class SGD(Optimizer):
    """SGD with momentum, Nesterov momentum, L2 weight decay, parameter groups and clipping."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay},
                         clip_norm)

    def update(self, p, g, group, state):
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd:
            g = g + wd * p.data
        if mu:
            v = state.get("momentum")
            v = g.copy() if v is None else mu * v + g
            state["momentum"] = v
            g = g + mu * v if group["nesterov"] else v
        p.data -= (lr * g).astype(p.data.dtype, copy=False)


class Adam(Optimizer):
    """Adam with bias correction, decoupled weight decay (AdamW), parameter groups and clipping.

    Defaults are the paper's and PyTorch's: betas (0.9, 0.999), eps 1e-8. Keras puts
    ε against the uncorrected √v_t (default 1e-7); the two agree once ε is negligible.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_norm=None):
        if not all(0 <= b < 1 for b in betas) or len(betas) != 2:
            raise ValueError(f"Adam betas must be two numbers in [0, 1), got {betas}")
        if eps <= 0:
            raise ValueError(f"Adam eps must be positive, got {eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}, clip_norm)

    def update(self, p, g, group, state):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        t = state["step"] = state.get("step", 0) + 1
        if wd:
            p.data -= (lr * wd * p.data).astype(p.data.dtype, copy=False)
        m = state["m"] = b1 * state["m"] + (1 - b1) * g if "m" in state else (1 - b1) * g
        v = state["v"] = b2 * state["v"] + (1 - b2) * g * g if "v" in state else (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p.data -= (lr * m_hat / (v_hat ** 0.5 + eps)).astype(p.data.dtype, copy=False)


class LRSchedule:
    """Sets each group's lr from its ``initial_lr`` and the epoch; call ``step()`` once per epoch,
    or ``set_epoch(e)`` to go to epoch e (when resuming)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.set_epoch(0)

    def factor(self, epoch):
        raise NotImplementedError

    def step(self):
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch):
        """η = initial_lr · factor(epoch) for every group."""
        self.epoch = epoch
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.factor(self.epoch)

    def get_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]


class StepLR(LRSchedule):
    """η_e = η_0 · γ^⌊e / step_size⌋: multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def factor(self, epoch):
        return self.gamma ** (epoch // self.step_size)


class CosineLR(LRSchedule):
    """η_e = η_min + (η_0 − η_min)(1 + cos(π e / T)) / 2 for e ≤ T, then η_min.

    T is ``t_max`` and η_min = ``min_factor`` · η_0, for each group from its own η_0.
    """

    def __init__(self, optimizer, t_max, min_factor=0.0):
        self.t_max, self.min_factor = t_max, min_factor
        super().__init__(optimizer)

    def factor(self, epoch):
        e = min(epoch, self.t_max)
        return self.min_factor + (1 - self.min_factor) * (1 + math.cos(math.pi * e / self.t_max)) / 2
