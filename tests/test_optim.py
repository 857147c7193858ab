import itertools
import math

import numpy as np
import pytest

import minitl.functional as F
from minitl import Tensor
from minitl.optim import SGD, Adam, CosineDecay, OneCycle, Schedule, StepDecay, make_schedule


def param(values, grad):
    p = Tensor(np.array(values, dtype=np.float64), requires_grad=True)
    p.grad = np.array(grad, dtype=np.float64)
    return p


def test_plain_sgd_step():
    p = param([1.0, -2.0], [0.5, 1.0])
    SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.05, -2.0 - 0.1])


def test_momentum_by_hand():
    p = param([1.0], [2.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()                       # v1 = g = 2,          w = 1 - 0.2 = 0.8
    p.grad = np.array([1.0])
    opt.step()                       # v2 = 0.9*2 + 1 = 2.8, w = 0.8 - 0.28 = 0.52
    np.testing.assert_allclose(p.data, [0.52])


def test_first_momentum_step_is_lr_times_the_gradient():
    p = param([1.0], [2.0])
    SGD([p], lr=0.1, momentum=0.9).step()     # v_1 = g_1: the step is η g_1 = 0.2, not 1.9 η g_1
    np.testing.assert_allclose(p.data, [0.8])


def test_momentum_is_an_exponentially_decaying_sum_of_gradients(rng):
    grads = rng.standard_normal((6, 3))
    lr, mu = 0.05, 0.8
    p = param(np.zeros(3), grads[0])
    opt = SGD([p], lr=lr, momentum=mu)
    expected = np.zeros(3)
    for t in range(len(grads)):
        p.grad = grads[t].copy()
        opt.step()
        velocity = sum(mu ** k * grads[t - k] for k in range(t + 1))   # v_t = Σ_k μ^k g_{t-k}
        expected -= lr * velocity
        np.testing.assert_allclose(p.data, expected, rtol=1e-12)


def test_nesterov_by_hand():
    p = param([1.0], [2.0])
    opt = SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    opt.step()                       # v1 = 2, step g + 0.9 v1 = 3.8,   w = 0.62
    p.grad = np.array([1.0])
    opt.step()                       # v2 = 2.8, step 1 + 2.52 = 3.52,  w = 0.268
    np.testing.assert_allclose(p.data, [0.268])


def test_weight_decay_added_before_momentum():
    p = param([2.0], [1.0])
    opt = SGD([p], lr=0.1, momentum=0.5, weight_decay=0.1)
    opt.step()                       # g = 1 + 0.1*2 = 1.2, v1 = 1.2, w = 2 - 0.12 = 1.88
    p.grad = np.array([1.0])
    opt.step()                       # g = 1 + 0.188 = 1.188, v2 = 0.6 + 1.188 = 1.788, w = 1.88 - 0.1788
    np.testing.assert_allclose(p.data, [1.88 - 0.1788])


def test_clipping_scales_the_raw_gradient_and_weight_decay_comes_after():
    a, b = param([10.0], [3.0]), param([0.0], [4.0])   # raw gradient norm 5, decay term 0.1·10 = 1
    opt = SGD([a, b], lr=1.0, weight_decay=0.1, clip_norm=1.0)
    assert opt.grad_norm() == pytest.approx(5.0)      # the norm of ∇L alone, without λW
    opt.step()                                        # a: 3/5 + 1 = 1.6; b: 4/5 + 0 = 0.8
    np.testing.assert_allclose([a.data[0], b.data[0]], [8.4, -0.8])


def test_param_groups_frozen_and_zero_grad():
    head, base, frozen = param([1.0], [1.0]), param([1.0], [1.0]), param([1.0], [1.0])
    frozen.requires_grad = False
    opt = SGD([{"params": [head]}, {"params": [base, frozen], "lr": 0.01}], lr=0.1)
    opt.step()
    np.testing.assert_allclose([head.data[0], base.data[0], frozen.data[0]], [0.9, 0.99, 1.0])
    opt.zero_grad()
    assert head.grad is None and base.grad is None


def test_weight_decay_leaves_frozen_parameters_alone():
    p, frozen = param([2.0], [1.0]), param([2.0], [1.0])
    frozen.requires_grad = False
    SGD([p, frozen], lr=0.1, momentum=0.9, weight_decay=0.5).step()
    np.testing.assert_allclose([p.data[0], frozen.data[0]], [2.0 - 0.1 * (1.0 + 0.5 * 2.0), 2.0])


def _factors(schedule, total):
    return [schedule.lr_factor(t, total) for t in range(total)]


def test_warmup_rises_linearly_then_holds():
    np.testing.assert_allclose(_factors(Schedule(warmup=0.4), 10), [0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1])
    assert _factors(Schedule(), 3) == [1.0, 1.0, 1.0]


def test_step_decay_divides_by_ten_after_each_third():
    np.testing.assert_allclose(_factors(StepDecay(), 9), [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01])


def test_cosine_decay_after_its_warmup_follows_the_formula():
    t_w, total, floor = 2, 10, 0.2
    expected = [(t + 1) / t_w for t in range(t_w)]
    expected += [floor + (1 - floor) * (1 + math.cos(math.pi * (t - t_w) / (total - t_w))) / 2
                 for t in range(t_w, total)]
    np.testing.assert_allclose(_factors(CosineDecay(min_factor=floor, warmup=0.2), total), expected, rtol=1e-12)


def test_one_cycle_rises_to_the_peak_and_falls_while_the_momentum_moves_the_other_way():
    total, cycle = 100, OneCycle(pct_start=0.25, div=25, div_final=1e4)
    lrs, moms = _factors(cycle, total), [cycle.momentum(t, total) for t in range(total)]
    assert lrs[0] == pytest.approx(1 / 25) and moms[0] == pytest.approx(0.95)
    assert max(lrs) == lrs[25] == pytest.approx(1.0) and min(moms) == moms[25] == pytest.approx(0.85)
    assert np.all(np.diff(lrs[:26]) > 0) and np.all(np.diff(lrs[25:]) < 0)
    assert np.all(np.diff(moms[:26]) < 0) and np.all(np.diff(moms[25:]) > 0)
    assert 1e-4 < lrs[-1] < 2e-3  # on the way to 1/div_final
    # halfway up, the cosine is halfway between η/div and η
    assert cycle.lr_factor(12.5, total) == pytest.approx((1 / 25 + 1) / 2)


def test_a_schedule_sets_every_groups_rate_from_its_own_and_the_momentum_it_moves():
    p, q = param([1.0], [0.0]), param([1.0], [0.0])
    sgd = SGD([{"params": [p]}, {"params": [q], "lr": 0.01}], lr=0.1, momentum=0.9)
    OneCycle().apply(sgd, 0, 10)
    assert [g["lr"] for g in sgd.param_groups] == pytest.approx([0.1 / 25, 0.01 / 25])
    assert [g["momentum"] for g in sgd.param_groups] == pytest.approx([0.95, 0.95])
    adam = Adam([p], lr=0.1, betas=(0.9, 0.99))
    OneCycle().apply(adam, 0, 10)
    assert adam.param_groups[0]["betas"] == pytest.approx((0.95, 0.99))
    plain = SGD([p], lr=0.1)  # without momentum: none is added
    OneCycle().apply(plain, 0, 10)
    assert plain.param_groups[0]["momentum"] == 0.0
    assert make_schedule("onecycle", 0.3).pct_start == 0.3 and make_schedule("onecycle").pct_start == 0.25
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        make_schedule("linear")


def test_state_dict_round_trip():
    p = param([1.0, 2.0], [1.0, 1.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    state = opt.state_dict()
    q = param(p.data.copy(), [1.0, 1.0])
    opt2 = SGD([q], lr=0.5, momentum=0.9)
    opt2.load_state_dict(state)
    p.grad = np.array([1.0, 1.0])
    opt.step()
    opt2.step()
    np.testing.assert_allclose(q.data, p.data)


def test_bad_arguments():
    with pytest.raises(ValueError, match="learning rate must be positive, got 0"):
        SGD([], lr=0)
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0"):
        SGD([], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got -0.9"):
        SGD([], lr=0.1, momentum=-0.9)
    with pytest.raises(ValueError, match="weight decay must be 0 or more, got -0.01"):
        SGD([], lr=0.1, weight_decay=-0.01)
    with pytest.raises(ValueError, match="clip_norm must be positive, got 0"):
        SGD([], lr=0.1, clip_norm=0)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: Adam(ps, lr=0.01)],
                         ids=["sgd", "adam"])
def test_two_layer_network_fits_separable_data(make):
    rng = np.random.default_rng(0)
    n = 60
    x = rng.standard_normal((n, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR-like quadrants: needs the hidden layer
    w1 = Tensor(rng.standard_normal((2, 16)) * 0.5, requires_grad=True)
    b1 = Tensor(np.zeros(16), requires_grad=True)
    w2 = Tensor(rng.standard_normal((16, 2)) * 0.5, requires_grad=True)
    b2 = Tensor(np.zeros(2), requires_grad=True)
    opt = make([w1, b1, w2, b2])
    losses = []
    for _ in range(500):
        logits = F.dense(F.relu(F.dense(Tensor(x), w1, b1)), w2, b2)
        loss = F.softmax_cross_entropy(logits, y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(b < a for a, b in itertools.pairwise(losses)), losses[:6]
    accuracy = (logits.data.argmax(axis=1) == y).mean()
    assert accuracy == 1.0, (accuracy, losses[-1])


def test_global_norm_clipping():
    a, b = param([0.0], [3.0]), param([0.0], [4.0])  # global norm 5
    opt = SGD([a, b], lr=1.0, clip_norm=1.0)
    assert opt.grad_norm() == pytest.approx(5.0)
    opt.step()
    np.testing.assert_allclose([a.data[0], b.data[0]], [-0.6, -0.8])
    c = param([0.0], [0.5])
    SGD([c], lr=1.0, clip_norm=1.0).step()  # below the limit: unchanged
    np.testing.assert_allclose(c.data, [-0.5])


def test_adam_with_a_constant_gradient_steps_lr_times_its_sign():
    # m̂ = g and v̂ = g² exactly when g never changes, so every step is lr · g / (|g| + ε).
    g = np.array([0.5, -1.0, 2e-3])
    p = param([1.0, -2.0, 3.0], g)
    opt = Adam([p], lr=0.1)
    for _ in range(5):
        opt.step()
    np.testing.assert_allclose(p.data, np.array([1.0, -2.0, 3.0]) - 5 * 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-12)


def adam_by_hand(w, grad_fn, steps, lr, b1, b2, eps, wd):
    """Adam on a list of floats, one element at a time (decoupled weight decay before the step)."""
    w, m, v = list(w), [0.0] * len(w), [0.0] * len(w)
    for t in range(1, steps + 1):
        g = grad_fn(w)
        for i in range(len(w)):
            w[i] -= lr * wd * w[i]
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            w[i] -= lr * (m[i] / (1 - b1 ** t)) / (math.sqrt(v[i] / (1 - b2 ** t)) + eps)
    return w


def test_adam_matches_an_elementwise_reference_on_a_quadratic():
    a, c = np.array([1.0, 4.0, 0.25, 2.0]), np.array([0.5, -1.0, 3.0, 0.0])

    def grad(w):  # L = ½ Σ a (w − c)²
        return list(a * (np.asarray(w) - c))

    w0 = [2.0, 1.0, -1.0, 0.3]
    p = Tensor(np.array(w0), requires_grad=True)
    opt = Adam([p], lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    for _ in range(20):
        p.grad = np.array(grad(p.data))
        opt.step()
    expected = adam_by_hand(w0, grad, 20, 0.05, 0.8, 0.99, 1e-6, 0.1)
    np.testing.assert_allclose(p.data, expected, rtol=1e-12)


def test_adam_matches_pytorch_adamw():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0, grads = rng.standard_normal((3, 4)), rng.standard_normal((6, 3, 4))
    p = Tensor(w0.copy(), requires_grad=True)
    opt = Adam([p], lr=0.01, weight_decay=0.05)
    q = torch.tensor(w0.copy(), requires_grad=True)
    ref = torch.optim.AdamW([q], lr=0.01, weight_decay=0.05, eps=1e-8)
    for g in grads:
        p.grad = g
        opt.step()
        q.grad = torch.tensor(g)
        ref.step()
    np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-12, atol=1e-15)


def test_adam_state_round_trip_continues_bit_for_bit(tmp_path):
    from minitl.runs import load_optimizer, save_optimizer
    rng = np.random.default_rng(1)
    grads = rng.standard_normal((5, 2, 3))
    frozen = Tensor(np.ones(3), requires_grad=False)

    def make(w):
        p = Tensor(w.copy(), requires_grad=True)
        return p, Adam([{"params": [p]}, {"params": [frozen], "lr": 1e-4}], lr=0.01, weight_decay=0.01)

    p, opt = make(np.zeros((2, 3)))
    for g in grads:
        p.grad = g
        opt.step()
    q, opt_q = make(np.zeros((2, 3)))
    for g in grads[:3]:
        q.grad = g
        opt_q.step()
    save_optimizer(tmp_path / "opt.h5", opt_q)
    r, opt_r = make(q.data)
    load_optimizer(tmp_path / "opt.h5", opt_r)
    assert opt_r.state[id(r)]["step"] == 3 and id(frozen) not in opt_r.state
    for g in grads[3:]:
        r.grad = g
        opt_r.step()
    np.testing.assert_array_equal(r.data, p.data)
    np.testing.assert_array_equal(frozen.data, np.ones(3))


def test_optimizer_state_of_another_kind_or_shape_is_refused():
    p = param([1.0, 2.0], [1.0, 1.0])
    sgd = SGD([p], lr=0.1, momentum=0.9)
    sgd.step()
    with pytest.raises(ValueError, match="saved by SGD, cannot load it into Adam"):
        Adam([param([1.0, 2.0], [0.0, 0.0])]).load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match=r"shape \(2,\) does not fit parameter of shape \(3,\)"):
        SGD([param([1.0, 2.0, 3.0], [0.0] * 3)], lr=0.1).load_state_dict(sgd.state_dict())


def test_adam_bad_arguments():
    with pytest.raises(ValueError, match="betas"):
        Adam([], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="eps"):
        Adam([], eps=0)
    with pytest.raises(ValueError, match="learning rate"):
        Adam([], lr=-1e-3)
    with pytest.raises(ValueError, match="weight decay"):
        Adam([], weight_decay=-1e-4)


def test_optimizer_file_holds_one_dataset_per_kind_of_buffer_and_refuses_other_shapes(tmp_path):
    import h5py

    from minitl.errors import TrainingError
    from minitl.runs import load_optimizer, save_optimizer
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 2, 4), (4,), (5, 2)]

    def make():
        ps = [Tensor(np.zeros(s, np.float32), requires_grad=True) for s in shapes]
        return ps, SGD(ps, lr=0.1, momentum=0.9)

    ps, opt = make()
    for p in ps:
        p.grad = rng.standard_normal(p.shape).astype(np.float32)
    opt.step()
    save_optimizer(tmp_path / "opt.h5", opt)
    with h5py.File(tmp_path / "opt.h5") as f:
        assert list(f["buffers"]) == ["momentum"] and f["buffers/momentum/params"][()].tolist() == [0, 1, 2]
        assert f["buffers/momentum/values"].shape == (72 + 4 + 10,)
    qs, again = make()
    load_optimizer(tmp_path / "opt.h5", again)
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(again.state[id(q)]["momentum"], opt.state[id(p)]["momentum"])
    other = SGD([Tensor(np.zeros(s, np.float32), requires_grad=True) for s in [(3, 3, 2, 4), (4,), (5, 3)]], lr=0.1)
    with pytest.raises(TrainingError, match=r"opt\.h5: cannot restore the optimizer: momentum: 86 numbers"):
        load_optimizer(tmp_path / "opt.h5", other)
