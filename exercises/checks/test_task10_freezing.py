"""Task 10's checks: after freezing, only the chosen layers and the head get gradients and
move, each by its group's rate, and a frozen BatchNormalization keeps its statistics."""
import numpy as np
import task10_freezing as task

from minitl import functional as F
from minitl import nn
from minitl.optim import SGD
from minitl.tensor import Tensor


def model():
    nn.manual_seed(0)
    base = nn.Sequential([nn.Conv2D(4, 3, padding="same", name="conv1"), nn.BatchNormalization(name="bn1"),
                          nn.ReLU(name="relu1"), nn.Conv2D(4, 3, activation="relu", name="conv2"),
                          nn.MaxPool2D(name="pool")], name="base")
    head = nn.Sequential([nn.Flatten(name="flatten"), nn.Dense(3, name="predictions")], name="head")
    return nn.Sequential([base, head], input_shape=(6, 6, 3))


def batch(rng):
    return Tensor(rng.standard_normal((2, 6, 6, 3)).astype(np.float32)), np.array([0, 2])


def test_task10_only_the_chosen_layers_and_the_head_get_gradients(rng):
    m = model()
    task.freeze_all_but(m[0], ["conv2"])
    x, y = batch(rng)
    F.softmax_cross_entropy(m(x), y).backward()
    for name, p in m.named_parameters():
        trainable = name.startswith(("base.conv2.", "head."))
        assert p.requires_grad == trainable, f"{name}: requires_grad is {p.requires_grad}, should be {trainable}"
        assert (p.grad is not None) == trainable, f"{name}: {'no' if trainable else 'a'} gradient after backward"
    assert not m[0].get_layer("bn1").trainable, "bn1 is frozen but still trainable: freeze the module, not only W"


def test_task10_a_frozen_batch_norm_keeps_its_moving_statistics(rng):
    m = model()
    task.freeze_all_but(m[0], ["conv2"])
    bn = m[0].get_layer("bn1")
    before = bn.moving_mean.data.copy(), bn.moving_variance.data.copy()
    m.train()
    m(batch(rng)[0])
    assert (bn.moving_mean.data == before[0]).all() and (bn.moving_variance.data == before[1]).all(), \
        "a forward pass in training mode changed the frozen bn1's moving statistics"


def test_task10_each_group_steps_at_its_own_rate(rng):
    m = model()
    task.freeze_all_but(m[0], ["conv2"])
    groups = task.param_groups(m, 0.1, 0.01)
    assert groups, "param_groups returned nothing"
    frozen = {id(p) for p in m.parameters() if not p.requires_grad}
    assert not any(id(p) in frozen for g in groups for p in g["params"]), "a frozen parameter is in a group"
    before = {name: p.data.copy() for name, p in m.named_parameters()}
    x, y = batch(rng)
    F.softmax_cross_entropy(m(x), y).backward()
    grads = {name: None if p.grad is None else p.grad.copy() for name, p in m.named_parameters()}
    SGD(groups, lr=0.5).step()                                  # each group's own lr wins over this one
    for name, p in m.named_parameters():
        rate = 0.1 if name.startswith("head.") else 0.01 if name.startswith("base.conv2.") else 0.0
        expected = before[name] - rate * grads[name] if rate else before[name]
        np.testing.assert_allclose(p.data, expected, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{name} should have moved by {rate} · its gradient")
