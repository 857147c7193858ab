"""Task 1: the reverse topological walk of backward.

docs/math.md §1, "The chain rule over the whole graph" and "Why the walk goes in reverse
topological order"; the engine's walk is ``minitl.tensor.Tensor.backward``.

An op's output y = f(x_1, ..., x_k) remembers its op (its creator) and the op remembers
its inputs: a graph from the loss back to the leaves (the inputs and the parameters). The
chain rule, for every node x of the graph,

    dL/dx = Σ over the ops f that read x of  (∂f/∂x)ᵀ dL/df            dL/dL = 1

and ``op_backward`` below computes one term of it: the op's vector-Jacobian products. An
op may only send its gradient back once dL/d(its output) is complete, that is, once every
op that reads its output has sent its own: visit the nodes in reverse topological order,
the output first. A leaf keeps its total in ``leaf.grad``.

What you write
    topological_order(root)  every node that root depends on (root included), each once,
                             every node after all of its inputs (so root is last)
    backward(loss)           the walk: leaf.grad = dL/dleaf for every leaf that requires grad

Hints
    - A depth-first search that appends a node after all of its inputs gives the order.
    - Graphs can be deep (a chain of thousands of ops): a recursive search hits Python's
      recursion limit; use a list as a stack of (node, inputs done?) pairs.
    - Keep the gradients in a dict keyed by id(node) (nodes are not hashable by value),
      starting from {id(root_of(loss)): np.ones(loss.shape, dtype=loss.dtype)}.
    - A node read by two ops receives two gradients: add them.

Run the checks: python -m pytest exercises -k task01
"""
from minitl.tensor import _input_grads, _unbroadcast


def root_of(loss):
    """The graph node of a tensor: itself for a leaf, else the record the graph keeps of it."""
    return loss._graph_node()


def creator(node):
    """The op that made ``node``, or None for a leaf (an input or a parameter)."""
    return node._creator


def inputs(node):
    """The nodes that ``node``'s op read and that need a gradient (none for a leaf)."""
    fn = node._creator
    return [] if fn is None else [x for x in fn.inputs if x.requires_grad]


def op_backward(node, g):
    """[(input node, dL/dinput), ...] for the op that made ``node``, given g = dL/dnode."""
    fn = node._creator
    fn.needs_grad = tuple(x.requires_grad for x in fn.inputs)
    return [(x, _unbroadcast(gx, x.shape)) for x, gx in zip(fn.inputs, _input_grads(fn, g))
            if gx is not None and x.requires_grad]


def topological_order(root):
    """The nodes that ``root`` depends on, root included, each once, each after its inputs."""
    raise NotImplementedError("task 1: write topological_order")


def backward(loss):
    """Set leaf.grad = dL/dleaf for every leaf of ``loss``'s graph that requires grad
    (``loss`` is a one-element tensor, dL/dL = 1)."""
    raise NotImplementedError("task 1: write backward")
