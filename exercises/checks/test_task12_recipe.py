"""Task 12's checks: your ops in the engine's graph, then the recipe's table with your
convolution and pooling against the same run with the engine's."""
import numpy as np
import pytest
import recipe
import task12_plug_in as task
from expect import close, gradients, tensors

from minitl import functional as F
from minitl.tensor import Tensor


@pytest.mark.parametrize("stride, padding, bias", [(1, "same", True), (2, "valid", False), (2, "same", True)])
def test_task12_conv_op(rng, stride, padding, bias):
    x, w, b = tensors(rng, (2, 5, 6, 3), (3, 3, 3, 2), (2,))
    inputs = (x, w, b) if bias else (x, w)
    assert isinstance(recipe.conv2d(*inputs, stride=stride, padding=padding)._creator, task.Conv2D)
    mine = recipe.conv2d(*inputs, stride=stride, padding=padding, activation="relu")
    close(mine.data, F.conv2d(*inputs, stride=stride, padding=padding, activation="relu").data,
          f"y (stride {stride}, padding {padding!r})")
    names = ("x", "W", "b")[:len(inputs)]
    gradients(lambda *xs: recipe.conv2d(*xs, stride=stride, padding=padding), names, *inputs)


def test_task12_max_pool_op(rng):
    x = Tensor(rng.permutation(2 * 6 * 6 * 3).reshape(2, 6, 6, 3) * 0.1, requires_grad=True)
    y = recipe.max_pool2d(x)
    assert isinstance(y._creator, task.MaxPool2D)
    close(y.data, F.max_pool2d(x).data, "y of 2x2 max-pooling")
    gradients(recipe.max_pool2d, "x", x)


def test_task12_the_recipe_gives_the_engines_table_with_your_kernels(monkeypatch):
    calls = {"Conv2D": 0, "MaxPool2D": 0}
    for name in calls:
        cls = getattr(task, name)
        backward = cls.backward

        def counted(self, gy, name=name, backward=backward):
            calls[name] += 1
            return backward(self, gy)
        monkeypatch.setattr(cls, "backward", counted)
    engine = recipe.run(log=lambda line: None)
    assert calls == {"Conv2D": 0, "MaxPool2D": 0}
    with recipe.own_kernels():
        yours = recipe.run(log=lambda line: None)
    assert calls["Conv2D"] and calls["MaxPool2D"], f"your ops' backward never ran: {calls}"
    for row, mine in zip(engine["history"], yours["history"]):
        for key in ("loss", "val_loss"):
            assert mine[key] == pytest.approx(row[key], rel=1e-4), (
                f"epoch {row['epoch']}'s {key}: {mine[key]:.6f} with your kernels, {row[key]:.6f} with the engine's")
    assert yours["loss"] == pytest.approx(engine["loss"], rel=1e-4), "the test loss differs"
    assert yours["confusion_matrix"] == engine["confusion_matrix"], "the confusion matrices differ"
    assert (yours["accuracy"], yours["macro_f1"]) == (engine["accuracy"], engine["macro_f1"])
    assert np.isfinite(engine["loss"]) and 0 < engine["accuracy"] <= 1
