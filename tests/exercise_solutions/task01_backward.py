"""Task 1's solution: the walk of ``minitl.tensor.Tensor.backward``, without its memory handling."""
import numpy as np

from minitl.tensor import _input_grads, _unbroadcast


def root_of(loss):
    return loss._graph_node()


def creator(node):
    return node._creator


def inputs(node):
    fn = node._creator
    return [] if fn is None else [x for x in fn.inputs if x.requires_grad]


def op_backward(node, g):
    fn = node._creator
    fn.needs_grad = tuple(x.requires_grad for x in fn.inputs)
    return [(x, _unbroadcast(gx, x.shape)) for x, gx in zip(fn.inputs, _input_grads(fn, g))
            if gx is not None and x.requires_grad]


def topological_order(root):
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((x, False) for x in inputs(node) if id(x) not in seen)
    return order


def backward(loss):
    root = root_of(loss)
    grads = {id(root): np.ones(loss.shape, dtype=loss.dtype)}
    for node in reversed(topological_order(root)):
        g = grads.pop(id(node))
        if creator(node) is None:
            node.grad = g if node.grad is None else node.grad + g
            continue
        for x, gx in op_backward(node, g):
            grads[id(x)] = grads[id(x)] + gx if id(x) in grads else gx
