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

Schedules (`Schedule`) set each group's η from its own initial rate η_0 before every
batch t of the T of a training phase: a linear warm-up, then constant, step decay,
cosine decay, or the one-cycle policy (which also moves the momentum).
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


class Schedule:
    """A learning-rate (and momentum) schedule over the T steps (batches) of a training phase.

    At step t = 0 … T−1 every parameter group g gets η_g = η_g,0 · lr_factor(t, T), its own
    initial rate times one factor, so the ratios between groups (per-block rates) stay.
    A schedule that moves the momentum gives ``momentum(t, T)``: SGD's μ, or Adam's β1.
    Every value is a function of t alone, so a resumed run gets the same rates.
    ``warmup`` (a fraction of the steps, W = warmup·T): a linear rise η_0·(t + 1)/W first.
    """

    def __init__(self, warmup=0.0):
        if not 0 <= warmup < 1:
            raise ValueError(f"warmup must be a fraction of the steps in [0, 1), got {warmup}")
        self.warmup = warmup

    def lr_factor(self, t, total):
        w = self.warmup * total
        return min(1.0, (t + 1) / w) * self.decay(t, total) if w >= 1 else self.decay(t, total)

    def decay(self, t, total):
        """The factor after the warm-up (1: constant)."""
        return 1.0

    def momentum(self, t, total):
        """The momentum at step t, or None to leave it as the optimizer has it."""

    def apply(self, optimizer, t, total):
        """Set every group's rate (and momentum, when this schedule moves it) for step t of total."""
        factor, momentum = self.lr_factor(t, total), self.momentum(t, total)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
            if momentum is None:
                continue
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            elif group.get("momentum"):
                group["momentum"] = momentum


class StepDecay(Schedule):
    """η_t = η_0 · γ^⌊pieces · t / T⌋: the rate multiplied by ``gamma`` after each of ``pieces``
    equal parts of the steps (0.1 after the first third and again after the second)."""

    def __init__(self, gamma=0.1, pieces=3, warmup=0.0):
        super().__init__(warmup)
        self.gamma, self.pieces = gamma, pieces

    def decay(self, t, total):
        return self.gamma ** (self.pieces * t // total)


class CosineDecay(Schedule):
    """After the warm-up's W steps: η_t = η_min + (η_0 − η_min)(1 + cos(π (t − W) / (T − W))) / 2,
    from η_0 down to η_min = ``min_factor`` · η_0 at the last step."""

    def __init__(self, min_factor=0.0, warmup=0.0):
        super().__init__(warmup)
        self.min_factor = min_factor

    def decay(self, t, total):
        w = int(self.warmup * total)
        if t < w:
            return 1.0
        return _cosine(1.0, self.min_factor, (t - w) / max(total - w, 1))


def _cosine(start, end, p):
    """From ``start`` at p = 0 to ``end`` at p = 1 along half a cosine."""
    return end + (start - end) * (1 + math.cos(math.pi * p)) / 2


class OneCycle(Schedule):
    """The one-cycle policy (Smith 2018; fastai's ``fit_one_cycle``, PyTorch's ``OneCycleLR``).

    Over the first P = ``pct_start`` · T steps the rate rises along half a cosine from
    η_0/div to η_0, then falls along half a cosine to η_0/div_final at the last step; the
    momentum moves the opposite way, from ``moms[0]`` down to ``moms[1]`` and back (SGD's μ,
    or Adam's β1; SGD without momentum keeps none).
    """

    def __init__(self, pct_start=0.25, div=25.0, div_final=1e5, moms=(0.95, 0.85)):
        if not 0 < pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
        super().__init__(0.0)
        self.pct_start, self.div, self.div_final, self.moms = pct_start, div, div_final, tuple(moms)

    def _phase(self, t, total):
        """(rising, progress in that part)."""
        rise = self.pct_start * total
        if t < rise:
            return True, t / rise
        return False, (t - rise) / max(total - rise, 1)

    def decay(self, t, total):
        rising, p = self._phase(t, total)
        return _cosine(1 / self.div, 1.0, p) if rising else _cosine(1.0, 1 / self.div_final, p)

    def momentum(self, t, total):
        rising, p = self._phase(t, total)
        high, low = self.moms
        return _cosine(high, low, p) if rising else _cosine(low, high, p)


def make_schedule(name, warmup=0.0):
    """The schedule called ``name`` ('none', 'step', 'cosine', 'onecycle'); ``warmup`` is the
    fraction of the steps that warm up (for 'onecycle', its rise: pct_start, 0.25 when 0)."""
    if name in (None, "none", "constant"):
        return Schedule(warmup)
    if name == "step":
        return StepDecay(warmup=warmup)
    if name == "cosine":
        return CosineDecay(warmup=warmup)
    if name == "onecycle":
        return OneCycle(pct_start=warmup or 0.25)
    raise ValueError(f"unknown learning-rate schedule {name!r}: use none, step, cosine or onecycle")
