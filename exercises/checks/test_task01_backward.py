"""Task 1's checks: the order of the walk, and the gradients it gives against the engine's."""
import numpy as np
import pytest
import task01_backward as task
from expect import close

from minitl import functional as F
from minitl.tensor import Tensor


def diamond(seed=0):
    """x feeds a and b, a feeds b and c: both nodes are read twice."""
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = Tensor(rng.standard_normal((4, 2)), requires_grad=True)
    a = x * x
    b = a + x
    c = F.relu(a @ w) * (b @ w)
    return (c.sum() + a.mean()), [x, w]


def ancestors(root):
    seen, todo = {id(root): root}, [root]
    while todo:
        for x in task.inputs(todo.pop()):
            if id(x) not in seen:
                seen[id(x)] = x
                todo.append(x)
    return seen


def test_task01_order_puts_every_node_after_its_inputs():
    loss, _ = diamond()
    root = task.root_of(loss)
    order = task.topological_order(root)
    assert order is not None, "topological_order returned None"
    ids = [id(n) for n in order]
    assert len(ids) == len(set(ids)), "a node appears twice in the order"
    missing = set(ancestors(root)) - set(ids)
    assert not missing, f"{len(missing)} of the graph's nodes are missing from the order"
    assert ids[-1] == id(root), "the root (the loss) must come last: it depends on every other node"
    position = {k: i for i, k in enumerate(ids)}
    for node in order:
        for x in task.inputs(node):
            assert position[id(x)] < position[id(node)], (
                f"{type(task.creator(node)).__name__}'s output comes before one of its inputs "
                f"({type(task.creator(x)).__name__ if task.creator(x) else 'a leaf'})")


def test_task01_walk_gives_the_engines_gradients_when_nodes_are_read_twice():
    loss, leaves = diamond()
    task.backward(loss)
    mine = [p.grad for p in leaves]
    for p in leaves:
        p.grad = None
    loss, leaves = diamond()
    loss.backward()
    for name, g, p in zip(("x", "W"), mine, leaves):
        close(g, p.grad, f"dL/d{name} (x is read by three ops, a = x·x by two)")


def test_task01_walk_sums_broadcast_gradients_and_skips_constants(rng):
    x = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = Tensor(rng.standard_normal(3), requires_grad=True)
    c = Tensor(rng.standard_normal((2, 3)))                   # a constant: no gradient
    loss = ((x + b) * c).sum()
    task.backward(loss)
    close(x.grad, c.data, "dL/dx")
    close(b.grad, c.data.sum(axis=0), "dL/db (b was broadcast over 2 rows)")
    assert c.grad is None, "a tensor with requires_grad=False got a gradient"


def test_task01_walk_survives_a_graph_deeper_than_the_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0001
    try:
        task.backward(y.sum())
    except RecursionError:
        pytest.fail("RecursionError on a chain of 3000 ops: walk the graph with a list as a stack")
    close(x.grad, [1.0001 ** 3000], "dL/dx through 3000 multiplications", rtol=1e-9)
