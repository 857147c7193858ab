"""Stochastic gradient descent and learning-rate schedules.

The update is W_{t+1} = W_t − η ∇L(W_t). With weight decay λ the gradient is
g = ∇L(W) + λW (an L2 term, added before momentum, as PyTorch does). With
momentum μ the velocity is v_{t+1} = μ v_t + g (v_1 = g), and the step uses
v_{t+1}, or g + μ v_{t+1} for Nesterov momentum.
"""
import math

import numpy

from .backend import get_array_module, to_device, to_numpy


class SGD:
    """SGD with momentum, Nesterov momentum, weight decay and parameter groups.

    ``params`` is an iterable of tensors, or a list of dicts ``{"params": [...], "lr": ...}``
    whose keys override the defaults for that group (e.g. a lower learning rate for
    unfrozen base layers than for a new head). Parameters with requires_grad=False
    or without a gradient are skipped. ``clip_norm`` rescales all gradients together
    so that their global L2 norm is at most that value (Keras' ``global_clipnorm``).
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for g in groups:
            group = {**self.defaults, **g, "params": list(g["params"])}
            group.setdefault("initial_lr", group["lr"])
            self.param_groups.append(group)
        self.velocity = {}  # id(param) -> momentum buffer
        self.clip_norm = clip_norm

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def grad_norm(self):
        """The global L2 norm of the gradients that step() would use."""
        return math.sqrt(sum(float((p.grad * p.grad).sum()) for p in self._params()
                             if p.requires_grad and p.grad is not None))

    def step(self):
        """One update of every trainable parameter that has a gradient."""
        scale = 1.0
        if self.clip_norm is not None:
            norm = self.grad_norm()
            scale = min(1.0, self.clip_norm / norm) if norm > 0 else 1.0
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if not p.requires_grad or p.grad is None:
                    continue
                g = p.grad if scale == 1.0 else p.grad * scale
                if wd:
                    g = g + wd * p.data
                if mu:
                    v = self.velocity.get(id(p))
                    v = g.copy() if v is None else mu * v + g
                    self.velocity[id(p)] = v
                    g = g + mu * v if group["nesterov"] else v
                p.data -= (lr * g).astype(p.data.dtype, copy=False)

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """Learning rates and momentum buffers, as plain NumPy arrays keyed by parameter position."""
        velocity = {str(i): to_numpy(self.velocity[id(p)])
                    for i, p in enumerate(self._params()) if id(p) in self.velocity}
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"param_groups": groups, "velocity": velocity}

    def load_state_dict(self, state):
        params = self._params()
        if len(state["param_groups"]) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(state['param_groups'])} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        for group, saved in zip(self.param_groups, state["param_groups"]):
            group.update(saved)
        self.velocity = {}
        for key, v in state["velocity"].items():
            p = params[int(key)]
            device = "gpu" if get_array_module(p.data) is not numpy else "cpu"
            self.velocity[id(p)] = to_device(numpy.asarray(v, dtype=p.data.dtype), device)

    def to(self, device):
        """Move the momentum buffers with the parameters."""
        self.velocity = {k: to_device(v, device) for k, v in self.velocity.items()}
        return self


class LRSchedule:
    """Sets each group's lr from its ``initial_lr`` and the epoch; call ``step()`` once per epoch."""

    def __init__(self, optimizer):
        self.optimizer, self.epoch = optimizer, 0
        self._apply()

    def factor(self, epoch):
        raise NotImplementedError

    def step(self):
        self.epoch += 1
        self._apply()

    def _apply(self):
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
    """η_e = η_min + (η_0 − η_min)(1 + cos(π e / T)) / 2 for e ≤ T, then η_min."""

    def __init__(self, optimizer, t_max, min_factor=0.0):
        self.t_max, self.min_factor = t_max, min_factor
        super().__init__(optimizer)

    def factor(self, epoch):
        e = min(epoch, self.t_max)
        return self.min_factor + (1 - self.min_factor) * (1 + math.cos(math.pi * e / self.t_max)) / 2
