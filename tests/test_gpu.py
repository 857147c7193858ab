"""The same engine on an NVIDIA GPU through CuPy. Skipped (with the reason) where no GPU is usable."""
import numpy as np
import pytest

import minitl
import minitl.functional as F
from minitl import DeviceError, Tensor, kernels
from minitl.check import op_cases

pytestmark = pytest.mark.gpu
CASES = op_cases()


def on_gpu(inputs):
    return [Tensor(x.data, requires_grad=x.requires_grad).to("gpu") if isinstance(x, Tensor) else x for x in inputs]


@pytest.mark.parametrize("name,desc,fn,inputs", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_gradcheck_on_gpu(name, desc, fn, inputs):
    assert minitl.gradcheck(fn, *on_gpu(inputs)) < 1e-6


@pytest.mark.parametrize("name,desc,fn,inputs", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_forward_backward_equal_cpu(name, desc, fn, inputs):
    cpu = [Tensor(x.data.astype(np.float32), requires_grad=True) if isinstance(x, Tensor) else x for x in inputs]
    gpu = on_gpu(cpu)
    outs = []
    for args in (cpu, gpu):
        y = fn(*args)
        y.backward(
            np.ones(y.shape, np.float32) if y.device == "cpu" else Tensor(np.ones(y.shape, np.float32)).to("gpu").data
        )
        outs.append((y.numpy(), [minitl.backend.to_numpy(a.grad) for a in args if isinstance(a, Tensor)]))
    np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
    for g_gpu, g_cpu in zip(outs[1][1], outs[0][1]):
        np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-4, atol=1e-5)


def test_kernel_twins_on_cupy_equal_numba():
    import cupy

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    pads = (1, 1, 1, 1)
    np.testing.assert_allclose(
        kernels.im2col(cupy.asarray(x), 3, 3, 2, 2, pads).get(), kernels.im2col(x, 3, 3, 2, 2, pads), rtol=0, atol=0
    )
    cols = rng.standard_normal(kernels.im2col(x, 3, 3, 2, 2, pads).shape).astype(np.float32)
    np.testing.assert_allclose(
        kernels.col2im(cupy.asarray(cols), x.shape, 3, 3, 2, 2, pads).get(),
        kernels.col2im(cols, x.shape, 3, 3, 2, 2, pads),
        rtol=1e-6,
        atol=1e-6,
    )
    y, arg = kernels.max_pool_forward(x, 2, 2, 2, 2, (0, 0, 0, 0))
    yg, argg = kernels.max_pool_forward(cupy.asarray(x), 2, 2, 2, 2, (0, 0, 0, 0))
    np.testing.assert_array_equal(yg.get(), y)
    np.testing.assert_array_equal(argg.get(), arg)


def test_mixing_devices_is_a_clear_error():
    a, b = Tensor(np.ones(3, np.float32)), Tensor(np.ones(3, np.float32)).to("gpu")
    with pytest.raises(DeviceError, match="different devices.*cpu.*gpu"):
        a + b
    logits = Tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(DeviceError, match="targets are on gpu and the logits on cpu"):
        F.softmax_cross_entropy(logits, Tensor(np.array([0, 2])).to("gpu"))
    assert F.softmax_cross_entropy(logits.to("gpu"), np.array([0, 2])).device == "gpu"  # host labels are copied


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_vgg16_training_step_matches_cpu(optimizer):
    from minitl.applications import VGG16
    from minitl.nn import manual_seed
    from minitl.optim import SGD, Adam

    losses = []
    x = np.random.default_rng(0).normal(0, 50, (4, 32, 32, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    for device in ("cpu", "gpu"):
        manual_seed(0)
        model = VGG16(
            input_shape=(32, 32, 3), classes=3, width=1 / 16, fc_units=(16, 8), classifier_activation=None
        ).to(device)
        params = model.parameters()
        opt = SGD(params, lr=1e-3, momentum=0.9) if optimizer == "sgd" else Adam(params, lr=1e-4)
        for _ in range(3):
            loss = F.softmax_cross_entropy(model(Tensor(x).to(device)), Tensor(y).to(device).data)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
        if device == "gpu":
            assert all(
                minitl.backend.is_gpu_array(v) for s in opt.state.values() for v in s.values() if hasattr(v, "shape")
            )
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


def test_demo_finetuning_runs_on_gpu(tmp_path):
    from minitl import demo

    results = demo.run(
        out=tmp_path / "demo",
        train_per_class=5,
        epochs=2,
        recipe=demo.Recipe(finetune_epochs=1),
        progress=False,
        device="gpu",
        log=lambda *a: None,
    )
    assert set(results) == {"scratch", "frozen", "finetuned"}


def test_operators_with_cupy_and_host_operands():
    import cupy

    t = Tensor(np.arange(3, dtype=np.float32)).to("gpu")
    y = cupy.ones(3, dtype=cupy.float32) + t  # cupy.ndarray defers to Tensor.__radd__
    assert isinstance(y, Tensor) and y.device == "gpu"
    np.testing.assert_array_equal(y.numpy(), [1, 2, 3])
    np.testing.assert_array_equal((cupy.ones(3) < t).numpy(), [False, False, True])
    np.testing.assert_array_equal((t == np.array([0, 5, 2])).numpy(), [True, False, True])
    np.testing.assert_array_equal((t >= [1, 1, 1]).numpy(), [False, True, True])
    with pytest.raises(DeviceError, match="cannot compare"):
        _ = t == Tensor(np.zeros(3, np.float32))


def test_backward_takes_a_host_gradient_and_owns_broadcast_gradients():
    from minitl.backend import is_gpu_array, to_numpy

    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True).to("gpu")
    (x * 2).backward(np.ones((2, 3), np.float32))  # a NumPy gradient for a GPU graph
    assert is_gpu_array(x.grad)
    np.testing.assert_array_equal(to_numpy(x.grad), np.full((2, 3), 2))
    x.grad = None
    x.sum().backward()  # Sum's backward is a broadcast view
    assert 0 not in x.grad.strides
    x.grad[0, 0] = 7
    assert float(x.grad[1, 1]) == 1


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_state_on_gpu_matches_cpu_and_restores(optimizer):
    from minitl.backend import device_of, to_device, to_numpy
    from minitl.nn import Dense, manual_seed
    from minitl.optim import SGD, Adam

    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    kernels_after = []
    for device in ("cpu", "gpu"):
        manual_seed(0)
        layer = Dense(2, input_dim=3).to(device)

        def make():
            params = layer.parameters()
            return (
                SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
                if optimizer == "sgd"
                else Adam(params, lr=0.1, weight_decay=0.01)
            )

        opt = make()
        for _ in range(2):
            opt.zero_grad()
            (layer(Tensor(x).to(device)) ** 2).mean().backward()
            opt.step()
        kernels_after.append(layer.kernel.numpy())
        state = opt.state_dict()  # buffers handed back as arrays on the device
        state["state"] = {
            k: {n: to_device(v, device) if hasattr(v, "shape") else v for n, v in s.items()}
            for k, s in state["state"].items()
        }
        restored = make()
        restored.load_state_dict(state)
        for key, buffers in opt.state.items():
            for name, v in buffers.items():
                w = restored.state[key][name]
                if hasattr(v, "shape"):
                    assert device_of(v) == device_of(w) == device
                    np.testing.assert_array_equal(to_numpy(w), to_numpy(v))
                else:
                    assert w == v
    np.testing.assert_allclose(kernels_after[1], kernels_after[0], rtol=1e-5, atol=1e-6)


def test_fused_conv_relu_and_bias_relu_on_gpu():
    import cupy

    from minitl.backend import to_numpy

    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 6, 6, 3), (3, 3, 3, 4), (4,)))
    outs = []
    for device in ("cpu", "gpu"):
        args = [Tensor(a, requires_grad=True).to(device) for a in (x, w, b)]
        y = F.conv2d(*args, padding="same", activation="relu")
        y.sum().backward()
        outs.append([y.numpy()] + [to_numpy(a.grad) for a in args])
    for on_gpu, on_cpu in zip(outs[1], outs[0]):
        np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-4)
    y = rng.standard_normal((5, 4)).astype(np.float32)
    y[0, 0] = np.nan
    yg = cupy.asarray(y)
    assert kernels.bias_relu(yg, cupy.asarray(b)) is yg  # in place
    np.testing.assert_allclose(yg.get(), kernels.bias_relu(y.copy(), b))  # NaN stays NaN
    np.testing.assert_allclose(kernels.bias_relu(cupy.asarray(y)).get(), kernels.bias_relu(y.copy()))


def test_im2col_rows_into_a_buffer_on_gpu():
    import cupy

    x = np.random.default_rng(0).standard_normal((2, 7, 6, 3)).astype(np.float32)
    pads = (1, 1, 1, 1)
    rows = kernels.im2col(x, 3, 3, 2, 2, pads, rows=(1, 3))
    buf = cupy.empty((64, 27), cupy.float32)
    out = kernels.im2col(cupy.asarray(x), 3, 3, 2, 2, pads, out=buf[: len(rows)], rows=(1, 3))
    np.testing.assert_array_equal(out.get(), rows)
    np.testing.assert_array_equal(buf[: len(rows)].get(), rows)


@pytest.mark.parametrize("pool,arg_dtype", [(2, np.uint8), (17, np.int32)])
def test_max_pool_arg_max_dtype_and_gradient_on_gpu(pool, arg_dtype):
    import cupy

    x = np.random.default_rng(0).permutation(2 * 17 * 17 * 3).reshape(2, 17, 17, 3).astype(np.float32)
    window = (pool, pool, pool, pool, (0, 0, 0, 0))
    y, arg = kernels.max_pool_forward(x, *window)
    yg, argg = kernels.max_pool_forward(cupy.asarray(x), *window)
    assert argg.dtype == arg.dtype == arg_dtype
    np.testing.assert_array_equal(yg.get(), y)
    np.testing.assert_array_equal(argg.get(), arg)
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(
        kernels.max_pool_backward(cupy.asarray(gy), argg, x.shape, *window).get(),
        kernels.max_pool_backward(gy, arg, x.shape, *window),
    )


def test_lazily_built_layers_follow_a_gpu_input():
    from minitl.nn import Conv2D, Dense, Flatten, Sequential

    model = Sequential([Conv2D(2, 3, activation="relu"), Flatten(), Dense(3)]).to("gpu")
    y = model(Tensor(np.ones((1, 5, 5, 1), np.float32)).to("gpu"))
    assert y.device == "gpu" and all(p.device == "gpu" for p in model.parameters())


def test_grad_cam_on_gpu_matches_cpu():
    import cupy

    from minitl import viz
    from minitl.demo import DEMO_BASES, config
    from minitl.nn import manual_seed
    from minitl.transfer import build_model

    manual_seed(0)
    model = build_model(config(DEMO_BASES["vgg16"], 3, hidden=(8,), dropout=0.5))
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    cpu = viz.grad_cam(model, x, class_index=[0, 2])
    model.to("gpu")
    gpu = viz.grad_cam(model, Tensor(x).to("gpu"), class_index=cupy.asarray([0, 2]))
    assert isinstance(gpu, np.ndarray) and all(p.device == "gpu" for p in model.parameters())
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3)
    assert viz.overlay(cupy.asarray(x[0]), gpu[0]).shape == (32, 32, 3)


def test_cli_predict_on_gpu_matches_cpu(tmp_path, capsys):
    from PIL import Image

    from minitl import io as weights_io
    from minitl.cli import main
    from minitl.demo import DEMO_BASES, config
    from minitl.files import write_json
    from minitl.nn import manual_seed
    from minitl.transfer import build_model

    manual_seed(0)
    cfg = config(DEMO_BASES["vgg16"], 2, hidden=(8,), dropout=0.0)
    model = build_model(cfg)
    model.get_layer("block1_conv1").kernel.data /= 100  # logits of a few units: probabilities short of 0 and 1
    weights_io.save_weights(model, tmp_path / "checkpoint.h5")
    write_json(tmp_path / "record.json", {"classes": ["a", "b"], "image_size": [32, 32], "model": cfg})
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    probs = []
    for device in ("cpu", "gpu"):
        assert main(["predict", str(tmp_path), str(image), "--device", device]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == str(image)
        probs.append({line.split()[0]: float(line.split()[1]) for line in lines[1:]})
    assert probs[1].keys() == probs[0].keys() == {"a", "b"}
    for name in probs[0]:
        assert probs[1][name] == pytest.approx(probs[0][name], abs=2e-4)


def test_finetune_on_gpu_with_an_unfrozen_block(tmp_path):
    from minitl.data import ArrayDataset
    from minitl.transfer import finetune, load_run

    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(0, 50, (8, 32, 32, 3)).astype(np.float32), np.arange(8) % 2)
    data.classes = ["a", "b"]
    model, record = finetune(
        data,
        data,
        tmp_path / "run",
        width=1 / 16,
        hidden=(8,),
        epochs=1,
        batch_size=4,
        unfreeze_blocks=1,
        device="cuda",
        progress=False,
        log=lambda *a: None,
    )
    assert record["status"] == "finished" and all(p.device == "gpu" for p in model.parameters())
    model, _ = load_run(tmp_path / "run", device="gpu")
    assert all(p.device == "gpu" for p in model.parameters())
