"""minitl.viz: the DOT graph, rendering with Graphviz, and Grad-CAM on a network whose answer is known."""
import os
import re
import shutil
import stat

import numpy as np
import pytest

import minitl.functional as F
from minitl import MinitlError, Tensor, viz
from minitl.nn import Conv2D, Dense, GlobalAvgPool2D, MaxPool2D, Sequential

NODE = re.compile(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)"', re.MULTILINE)
EDGE = re.compile(r"^\s*(\w+) -> (\w+);", re.MULTILINE)


def parse(dot):
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    nodes = dict(NODE.findall(dot))
    edges = EDGE.findall(dot)
    return nodes, edges


def dense_graph():
    """L = mean(relu(X W + b)²): 5 ops (MatMul, Add, ReLU, Pow, Mean) and 8 tensors."""
    rng = np.random.default_rng(0)
    X = Tensor(rng.standard_normal((2, 3)))
    W = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = Tensor(np.zeros(4, np.float32), requires_grad=True)
    X.name, W.name = "X", "W"
    loss = (F.relu(F.dense(X, W, b)) ** 2).mean()
    return loss, (X, W, b)


# ---- DOT ------------------------------------------------------------------------

def test_dot_of_a_known_graph():
    loss, _ = dense_graph()
    nodes, edges = parse(viz.to_dot(loss))
    ops = sorted(label for key, label in nodes.items() if key.startswith("f"))
    tensors = [label for key, label in nodes.items() if key.startswith("t")]
    assert ops == ["Add", "MatMul", "Mean", "Pow", "ReLUFunction"]
    assert len(tensors) == 8 and len(nodes) == 13
    for a, b in edges:  # every edge names declared nodes, and runs tensor -> op or op -> tensor
        assert a in nodes and b in nodes
        assert {a[0], b[0]} == {"t", "f"}
    assert len(edges) == 12  # inputs: MatMul 2, Add 2, ReLU 1, Pow 1, Mean 1; plus one output per op
    outputs = [a for a, _ in edges if a.startswith("f")]
    assert sorted(outputs) == sorted(k for k in nodes if k.startswith("f"))  # one output edge per op
    assert "X\\n(2, 3) float64" in tensors and "W\\n(3, 4) float64" in tensors
    assert "(4,) float32" in tensors and "(2, 4) float64" in tensors and "() float64" in tensors
    root = next(k for k, label in nodes.items() if label == "() float64")
    assert not any(a == root for a, _ in edges)  # nothing is computed from the loss


def test_dot_reused_tensor_is_one_node_and_deep_graphs_need_no_recursion():
    a = Tensor(np.ones(3), requires_grad=True)
    a.name = "a"
    nodes, edges = parse(viz.to_dot(a * a + a))
    assert len([k for k in nodes if k.startswith("t")]) == 3  # a, a*a, the sum
    key = next(k for k, label in nodes.items() if label == "a\\n(3,) float64")
    assert sorted(nodes[b] for a_, b in edges if a_ == key) == ["Add", "Mul", "Mul"]  # x*x uses a twice

    x = Tensor(np.zeros(1), requires_grad=True)
    y = x
    for _ in range(3000):
        y = y + 1.0
    nodes, edges = parse(viz.to_dot(y))
    # 3000 Adds, 3000 outputs, x, and one constant per Add
    assert len(nodes) == 3000 + 3000 + 1 + 3000
    assert len(edges) == 3 * 3000


def test_dot_after_backward_says_the_graph_was_freed(tmp_path):
    loss, _ = dense_graph()
    path = tmp_path / "graph.dot"
    assert viz.to_dot(loss, path) == path.read_text()
    loss.backward(retain_graph=True)
    assert viz.to_dot(loss) == path.read_text()  # retained: still drawable
    loss.backward()
    with pytest.raises(MinitlError, match=r"freed by backward\(\).*retain_graph=True"):
        viz.to_dot(loss)


def test_render_without_graphviz_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    loss, _ = dense_graph()
    with pytest.raises(MinitlError) as info:
        viz.render(loss, tmp_path / "graph.svg")
    message = str(info.value)
    for hint in ("apt-get install graphviz", "brew install graphviz", "conda install graphviz", "online"):
        assert hint in message
    assert str(tmp_path / "graph.dot") in message
    assert parse((tmp_path / "graph.dot").read_text())[0]


def fake_dot(folder, code=0):
    """A `dot` program that records its arguments and input, and writes its -o file."""
    folder.mkdir()
    script = folder / "dot"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{folder}/args"\ncat > "{folder}/stdin"\n'
                      f'echo drawn > "$3"\necho "syntax error in line 1" >&2\nexit {code}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


@pytest.mark.skipif(os.name != "posix", reason="the fake dot is a shell script")
def test_render_runs_dot(tmp_path, monkeypatch):
    bin_dir = fake_dot(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    loss, _ = dense_graph()
    out = viz.render(loss, tmp_path / "graph.svg")
    assert out.read_text() == "drawn\n"
    assert (bin_dir / "args").read_text().split() == ["-Tsvg", "-o", str(tmp_path / "graph.svg")]
    assert (bin_dir / "stdin").read_text() == viz.to_dot(loss)
    # a DOT file as input, the format given explicitly
    viz.render(str(tmp_path / "graph.dot"), tmp_path / "picture", format="PNG")
    assert (bin_dir / "args").read_text().split()[0] == "-Tpng"


@pytest.mark.skipif(os.name != "posix", reason="the fake dot is a shell script")
def test_render_reports_a_failing_dot(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_dot(tmp_path / 'bin', code=1)}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(MinitlError, match="syntax error in line 1"):
        viz.render("digraph { a -> }", tmp_path / "bad.png")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_render_with_graphviz(tmp_path):
    loss, _ = dense_graph()
    out = viz.render(loss, tmp_path / "graph.svg")
    assert "<svg" in out.read_text()


# ---- Grad-CAM -------------------------------------------------------------------

RED = (slice(2, 6), slice(10, 14))    # top right: decides class 1
BLUE = (slice(10, 14), slice(2, 6))   # bottom left: decides class 0


def color_net():
    """16×16 RGB -> 2 classes, weights set by hand: class 0 = mean blueness, class 1 = mean redness
    minus half the mean blueness.

    conv1 (3×3, 2 filters): filter 0 passes the red channel, filter 1 the blue one; max-pool to 8×8;
    last_conv (1×1) copies them; global average pooling; Dense mixes them into the two scores.
    """
    conv1 = Conv2D(2, 3, padding="same", activation="relu", name="conv1", input_channels=3)
    conv1.kernel.data[:] = 0
    conv1.kernel.data[1, 1, 0, 0] = conv1.kernel.data[1, 1, 2, 1] = 1
    last = Conv2D(2, 1, activation="relu", name="last_conv", input_channels=2)
    last.kernel.data[:] = np.eye(2)[None, None]
    out = Dense(2, name="scores", input_dim=2)
    out.kernel.data[:] = [[0, 1], [1, -0.5]]
    return Sequential([conv1, MaxPool2D(2, name="pool"), last, GlobalAvgPool2D(name="gap"), out])


def color_image():
    x = np.full((16, 16, 3), 0.1, np.float32)
    x[RED] = (1.0, 0.1, 0.1)
    x[BLUE] = (0.1, 0.1, 0.8)
    return x


def test_grad_cam_lights_up_the_patch_that_decides_the_class():
    model, x = color_net(), color_image()
    for cls, inside, outside in ((1, RED, BLUE), (0, BLUE, RED)):
        cam = viz.grad_cam(model, x, class_index=cls, layer="last_conv")
        assert cam.shape == (16, 16) and cam.dtype == np.float32
        assert cam.min() >= 0 and cam.max() == pytest.approx(1)
        r, c = np.unravel_index(cam.argmax(), cam.shape)
        assert inside[0].start <= r < inside[0].stop and inside[1].start <= c < inside[1].stop
        assert cam[inside].mean() > 0.7 and cam[outside].mean() < 0.2
    # for class 1, blue counts against: Σ_k w_k A_k < 0 there, and relu cuts it to 0
    assert viz.grad_cam(model, x, class_index=1, layer="last_conv")[BLUE].max() < 0.1
    predicted = int(model(Tensor(x[None])).numpy().argmax())
    np.testing.assert_array_equal(viz.grad_cam(model, x, layer="last_conv"),
                                  viz.grad_cam(model, x, class_index=predicted, layer="last_conv"))


def test_grad_cam_equals_the_retain_grad_computation_and_leaves_the_model_as_it_was():
    model, x = color_net(), color_image()
    x = x + np.random.default_rng(0).uniform(0, 0.3, x.shape).astype(np.float32)
    model.layers()[0].freeze()
    model.train()
    cam = viz.grad_cam(model, x, class_index=0, layer="last_conv")
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True, True, True]
    assert all(p.grad is None for p in model.parameters())

    # by hand: keep the gradient of last_conv's output, A, during an ordinary backward pass
    h = Tensor(x[None], requires_grad=True)
    for layer in model.layers():
        h = layer(h)
        if layer.name == "last_conv":
            A = h.retain_grad()
    h[:, 0].sum().backward()
    weights = A.grad.mean(axis=(1, 2))
    small = np.maximum((A.numpy() * weights[:, None, None, :]).sum(axis=3), 0)[0]
    expected = viz.upsample(small[None], 16, 16)[0]
    np.testing.assert_allclose(cam, expected / expected.max(), atol=1e-6)


def test_grad_cam_on_the_transfer_model_and_on_a_batch():
    from minitl.demo import DEMO_BASES, config
    from minitl.transfer import build_model
    model = build_model(config(DEMO_BASES["vgg16"], 3, hidden=(8,), dropout=0.5))
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    cams = viz.grad_cam(model, x)  # layer block5_conv3 inside the base, head after it
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.max() <= 1
    # float32 round-off differs between batch sizes
    np.testing.assert_allclose(cams[1], viz.grad_cam(model, x[1]), atol=1e-5)
    with pytest.raises(MinitlError, match="no layer 'conv9'.*block5_conv3"):
        viz.grad_cam(model, x, layer="conv9")
    with pytest.raises(MinitlError, match="outside the model's 3 classes"):
        viz.grad_cam(model, x, class_index=3)


def test_upsample_is_bilinear_at_pixel_centres():
    up = viz.upsample(np.array([[[0.0, 1.0], [0.0, 1.0]]]), 4, 4)
    np.testing.assert_allclose(up[0], [[0, 0.25, 0.75, 1]] * 4)
    np.testing.assert_allclose(viz.upsample(np.full((1, 3, 5), 0.3), 7, 11), 0.3)


def test_overlay_blends_the_heat_map():
    image = np.zeros((4, 4), np.uint8)
    cam = np.zeros((4, 4))
    cam[0, 0] = 1
    out = viz.overlay(image, cam, alpha=0.5)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] > 50 and out[0, 0, 1] == out[0, 0, 2] == 0  # 1 is (dark) red
    assert out[3, 3, 2] > 50 and out[3, 3, 0] == out[3, 3, 1] == 0  # 0 is (dark) blue
    np.testing.assert_array_equal(viz.overlay(np.full((4, 4, 3), 7, np.uint8), cam, alpha=0), 7)
    with pytest.raises(Exception, match="differ in size"):
        viz.overlay(image, np.zeros((3, 4)))
