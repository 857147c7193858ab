"""The slow references beside the fast kernels: the convolution's backward as loops, batch
normalisation as a chain of primitive ops, and ``conv.set_algorithm('reference')``."""
import numpy as np
import pytest

from minitl import conv, demo, io
from minitl import functional as F
from minitl.check import gradcheck, op_cases
from minitl.data import DataLoader
from minitl.datasets import load_animal_shapes
from minitl.nn import manual_seed
from minitl.optim import SGD
from minitl.tensor import Tensor
from minitl.train import evaluate, fit

CASES = [  # x shape, w shape, stride, padding
    ((2, 5, 5, 3), (3, 3, 3, 4), (1, 1), "same"),
    ((1, 6, 7, 2), (2, 3, 2, 3), (2, 1), "valid"),
    ((2, 7, 7, 3), (3, 3, 3, 2), (2, 2), "same"),
]


@pytest.mark.parametrize("algorithm", ["im2col", "winograd"])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CASES)
def test_backward_loops_match_the_fast_backward(rng, algorithm, x_shape, w_shape, stride, padding):
    x, w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in (x_shape, w_shape, w_shape[3:]))
    with conv.algorithm(algorithm):
        y = F.conv2d(x, w, b, stride, padding)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    pads = conv.resolve_padding(padding, x_shape[1:3], w_shape[:2], stride)
    dx, dw, db = conv.conv2d_backward_reference(gy, x.data, w.data, stride, pads)
    np.testing.assert_allclose(dx, x.grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dw, w.grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in op_cases() if c[0] == "Conv2DFunction"], ids=lambda c: c[1])
def test_reference_algorithm_passes_the_gradient_checks(case):
    _, _, fn, inputs = case
    with conv.algorithm("reference"):
        y = fn(*inputs)
        assert y._creator.reference
        gradcheck(fn, *inputs)


def test_reference_algorithm_gives_the_fast_outputs_and_skips_unneeded_gradients(rng):
    x = Tensor(rng.standard_normal((2, 6, 6, 3)).astype(np.float32))
    w = Tensor(rng.standard_normal((3, 3, 3, 4)).astype(np.float32), requires_grad=True)
    b = Tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    fast = F.conv2d(x, w, b, 1, "same", activation="relu")
    fast.sum().backward()
    grads = w.grad.copy(), b.grad.copy()
    w.grad = b.grad = None
    with conv.algorithm("reference"):
        slow = F.conv2d(x, w, b, 1, "same", activation="relu")
    assert slow.dtype == np.float32
    np.testing.assert_allclose(slow.data, fast.data, rtol=1e-5, atol=1e-5)
    slow.sum().backward()
    assert x.grad is None
    np.testing.assert_allclose(w.grad, grads[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(b.grad, grads[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, axis", [((4, 3, 3, 5), -1), ((6, 4), -1), ((3, 4, 2), 1)])
def test_batch_norm_as_primitive_ops_has_the_closed_form_gradient(rng, shape, axis):
    channels = shape[axis]
    x = Tensor(rng.standard_normal(shape) * 2 + 1, requires_grad=True)
    gamma = Tensor(rng.uniform(0.5, 1.5, channels), requires_grad=True)
    beta = Tensor(rng.standard_normal(channels), requires_grad=True)
    gy = rng.standard_normal(shape)
    chain = F.batch_norm_reference(x, gamma, beta, epsilon=1e-3, axis=axis)
    chain.backward(gy)
    by_graph = [t.grad.copy() for t in (x, gamma, beta)]
    for t in (x, gamma, beta):
        t.grad = None
    closed = F.batch_norm(x, gamma, beta, np.zeros(channels), np.ones(channels), training=True, epsilon=1e-3,
                          axis=axis)
    assert isinstance(closed._creator, F.BatchNormFunction)
    np.testing.assert_allclose(chain.data, closed.data, rtol=1e-12, atol=1e-12)
    closed.backward(gy)
    for name, graph, t in zip(("x", "gamma", "beta"), by_graph, (x, gamma, beta)):
        np.testing.assert_allclose(graph, t.grad, rtol=1e-10, atol=1e-12, err_msg=f"dL/d{name}")
    gradcheck(lambda x, g, b: F.batch_norm_reference(x, g, b, axis=axis), x, gamma, beta)


def _short_run():
    """The demo's fine-tuning step, small: the pretrained base's last block and a new head
    trained for one epoch on 20 images, then the test table on 100."""
    images, labels, names = load_animal_shapes()
    data = demo.split_target(images, labels, names, 4, 2, 20, seed=0)
    manual_seed(0)
    model = demo.build_demo_model(demo.config(demo.demo_base("vgg16"), len(demo.TARGET)))
    io.load_weights(model[0], demo.demo_weights_path())
    model[0].freeze()
    model[0].get_layer("block5_conv3").unfreeze()
    head = model[1].parameters()
    block = model[0].get_layer("block5_conv3").parameters()
    optimizer = SGD([{"params": head, "lr": 0.01}, {"params": block, "lr": 0.001}], lr=0.01, momentum=0.9)
    loop = fit(model, optimizer, DataLoader(data["train"], 10, shuffle=True), DataLoader(data["val"], 10), 1)
    return loop.record["history"], evaluate(model, DataLoader(data["test"], 50), list(demo.TARGET))


def test_the_demo_runs_under_the_reference_algorithm_with_the_same_table(monkeypatch):
    history, report = _short_run()
    calls = []
    loops = conv.conv2d_backward_reference
    monkeypatch.setattr(conv, "conv2d_backward_reference", lambda *a: calls.append(a[2].shape) or loops(*a))
    with conv.algorithm("reference"):
        slow_history, slow_report = _short_run()
    assert calls and all(shape == calls[0] for shape in calls)   # block5_conv3's backward, by the loops
    for row, slow in zip(history, slow_history):
        for key in ("loss", "val_loss"):
            assert slow[key] == pytest.approx(row[key], rel=1e-5), key
    assert slow_report["loss"] == pytest.approx(report["loss"], rel=1e-5)
    assert slow_report["confusion_matrix"] == report["confusion_matrix"]
    assert (slow_report["accuracy"], slow_report["macro_f1"]) == (report["accuracy"], report["macro_f1"])
