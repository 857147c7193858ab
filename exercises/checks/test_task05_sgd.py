"""Task 5's checks: the same parameters as minitl.optim.SGD's after several steps."""
import numpy as np
import pytest
import task05_sgd as task
from expect import close

from minitl.optim import SGD
from minitl.tensor import Tensor


def parameters(rng):
    ps = [Tensor(rng.standard_normal(s), requires_grad=True) for s in ((3, 2), (2,), (4,))]
    ps[2].requires_grad = False                               # a frozen one
    return ps


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_task05_steps_match_the_engines_sgd(rng, momentum):
    mine, engine = parameters(np.random.default_rng(1)), parameters(np.random.default_rng(1))
    yours, sgd = task.MomentumSGD(mine, 0.1, momentum), SGD(engine, 0.1, momentum=momentum)
    for step in range(1, 5):
        grads = [rng.standard_normal(p.shape) for p in mine]
        for a, b, g in zip(mine, engine, grads):
            a.grad, b.grad = (g.copy(), g.copy()) if a.requires_grad else (None, None)
        if step == 3:
            mine[1].grad = engine[1].grad = None              # no gradient this step: no update
        yours.step()
        sgd.step()
        for k, (a, b) in enumerate(zip(mine, engine)):
            close(a.data, b.data, f"parameter {k} after step {step} (momentum {momentum}"
                  + (", it is frozen" if k == 2 else ", no gradient at step 3" if k == 1 else "") + ")")


def test_task05_first_step_is_lr_times_the_gradient(rng):
    p = Tensor(rng.standard_normal(3), requires_grad=True)
    start, p.grad = p.data.copy(), np.array([1.0, -2.0, 0.5])
    task.MomentumSGD([p], 0.1, 0.9).step()
    close(p.data, start - 0.1 * np.array([1.0, -2.0, 0.5]), "W after the first step (v_1 = g_1)")
