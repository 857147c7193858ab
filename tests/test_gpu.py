"""The same engine on an NVIDIA GPU through CuPy. Skipped (with the reason) where no GPU is usable."""
import numpy as np
import pytest

import minitl
import minitl.functional as F
from minitl import DeviceError, Tensor, kernels
from minitl.gradcheck import op_cases

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
        y.backward(np.ones(y.shape, np.float32) if y.device == "cpu" else Tensor(np.ones(y.shape, np.float32)).to("gpu").data)
        outs.append((y.numpy(), [minitl.backend.to_numpy(a.grad) for a in args if isinstance(a, Tensor)]))
    np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
    for g_gpu, g_cpu in zip(outs[1][1], outs[0][1]):
        np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-4, atol=1e-5)


def test_kernel_twins_on_cupy_equal_numba():
    import cupy
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    pads = (1, 1, 1, 1)
    np.testing.assert_allclose(kernels.im2col(cupy.asarray(x), 3, 3, 2, 2, pads).get(),
                               kernels.im2col(x, 3, 3, 2, 2, pads), rtol=0, atol=0)
    cols = rng.standard_normal(kernels.im2col(x, 3, 3, 2, 2, pads).shape).astype(np.float32)
    np.testing.assert_allclose(kernels.col2im(cupy.asarray(cols), x.shape, 3, 3, 2, 2, pads).get(),
                               kernels.col2im(cols, x.shape, 3, 3, 2, 2, pads), rtol=1e-6, atol=1e-6)
    y, arg = kernels.max_pool_forward(x, 2, 2, 2, 2, (0, 0, 0, 0))
    yg, argg = kernels.max_pool_forward(cupy.asarray(x), 2, 2, 2, 2, (0, 0, 0, 0))
    np.testing.assert_array_equal(yg.get(), y)
    np.testing.assert_array_equal(argg.get(), arg)


def test_mixing_devices_is_a_clear_error():
    a, b = Tensor(np.ones(3, np.float32)), Tensor(np.ones(3, np.float32)).to("gpu")
    with pytest.raises(DeviceError, match="different devices.*cpu.*gpu"):
        a + b


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_vgg16_training_step_matches_cpu(optimizer):
    from minitl.models import VGG16
    from minitl.nn import manual_seed
    from minitl.optim import SGD, Adam
    losses = []
    x = np.random.default_rng(0).normal(0, 50, (4, 32, 32, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    for device in ("cpu", "gpu"):
        manual_seed(0)
        model = VGG16(input_shape=(32, 32, 3), classes=3, width=1 / 16, fc_units=(16, 8),
                      classifier_activation=None).to(device)
        params = model.parameters()
        opt = SGD(params, lr=1e-3, momentum=0.9) if optimizer == "sgd" else Adam(params, lr=1e-4)
        for _ in range(3):
            loss = F.softmax_cross_entropy(model(Tensor(x).to(device)), Tensor(y).to(device).data)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
        if device == "gpu":
            assert all(minitl.backend.is_gpu_array(v) for s in opt.state.values() for v in s.values()
                       if hasattr(v, "shape"))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


def test_demo_finetuning_runs_on_gpu(tmp_path):
    from minitl import demo
    results = demo.run(out=tmp_path / "demo", train_per_class=5, epochs=2, finetune_epochs=1, progress=False,
                       device="gpu", log=lambda *a: None)
    assert set(results) == {"scratch", "frozen", "finetuned"}
