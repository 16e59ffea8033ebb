"""TFAdam is TensorFlow 1's AdamOptimizer: its ε-hat formula, checked by hand, and bit for bit
against tf.compat.v1.train.AdamOptimizer where TensorFlow is installed."""

import copy

import numpy as np
import pytest
import torch

from lstm_pl.optim import TFAdam

RNG = np.random.default_rng(0)
START = RNG.normal(size=(5, 3))
# tiny gradients, where ε decides, between ordinary ones
GRADIENTS = [RNG.normal(size=(5, 3)) * scale for scale in [1e-7, 1.0, 1e-3] * 10]


def run_tf_adam(dtype, lr=1e-3, betas=(0.9, 0.999), eps=1e-8) -> np.ndarray:
    weight = torch.nn.Parameter(torch.tensor(START.astype(dtype)))
    optimizer = TFAdam([weight], lr=lr, betas=betas, eps=eps)
    for g in GRADIENTS:
        weight.grad = torch.tensor(g.astype(dtype))
        optimizer.step()
    return weight.detach().numpy()


def test_the_epsilon_hat_formula():
    """θ ← θ - lr·√(1-β₂ᵗ)/(1-β₁ᵗ) · m/(√v + ε), written out in float64 (constants as TF1's float32),
    and not torch.optim.Adam, which adds ε to the bias-corrected root."""
    f32 = lambda x: float(np.float32(x))
    lr, b1, b2, eps = f32(1e-3), f32(0.9), f32(0.999), f32(1e-8)
    theta, m, v = START.copy(), np.zeros_like(START), np.zeros_like(START)
    b1_power, b2_power = np.float32(b1), np.float32(b2)
    for g in GRADIENTS:
        lr_t = lr * np.sqrt(1 - float(b2_power)) / (1 - float(b1_power))
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        theta -= m * lr_t / (np.sqrt(v) + eps)
        b1_power, b2_power = np.float32(b1_power * np.float32(b1)), np.float32(b2_power * np.float32(b2))
    np.testing.assert_allclose(run_tf_adam(np.float64), theta, rtol=1e-13, atol=0)
    weight = torch.nn.Parameter(torch.tensor(START))
    torch_adam = torch.optim.Adam([weight], lr=1e-3)
    for g in GRADIENTS:
        weight.grad = torch.tensor(g)
        torch_adam.step()
    assert not np.allclose(weight.detach().numpy() - START, theta - START, rtol=1e-3, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_for_bit_against_tensorflow_1(dtype):
    tf = pytest.importorskip("tensorflow", reason="the parity extra (tensorflow) is not installed")
    graph = tf.Graph()
    with graph.as_default():
        variable = tf.compat.v1.Variable(START.astype(dtype))
        gradient = tf.compat.v1.placeholder(dtype, START.shape)
        update = tf.compat.v1.train.AdamOptimizer(1e-3, 0.9, 0.999, 1e-8).apply_gradients([(gradient, variable)])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for g in GRADIENTS:
                session.run(update, {gradient: g.astype(dtype)})
            expected = session.run(variable)
    np.testing.assert_array_equal(run_tf_adam(dtype), expected)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="TFAdam"):
        TFAdam([torch.nn.Parameter(torch.zeros(1))], lr=0.0)


def test_a_changed_learning_rate_is_followed():
    """A scheduler that moves lr mid-run: the next update uses the new rate (nothing cached stale).
    Adam's update is about lr·m̂/√v̂, so raising lr tenfold makes the next update about ten times larger."""
    weight = torch.nn.Parameter(torch.tensor(START))
    optimizer = TFAdam([weight], lr=1e-3)
    sizes = []
    for step, g in enumerate([RNG.normal(size=START.shape) for _ in range(6)]):
        if step == 3:
            optimizer.param_groups[0]["lr"] = 1e-2
        before = weight.detach().clone()
        weight.grad = torch.tensor(g)
        optimizer.step()
        sizes.append(float((weight.detach() - before).abs().mean()))
    assert sizes[3] > 5 * sizes[2] and sizes[2] < 2e-3 < sizes[3]


SHAPES = [(7, 33), (33,), (1, 1), (200, 50)]  # 10,906 elements: the one-parameter case above misses what these catch


def several_parameters(dtype: torch.dtype) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Starting values and six steps of gradients (scales 1e-7 to 10) for parameters of SHAPES."""
    generator = torch.Generator().manual_seed(1)
    start = [torch.randn(shape, generator=generator, dtype=dtype) for shape in SHAPES]
    return start, [[torch.randn(shape, generator=generator, dtype=dtype) * scale for shape in SHAPES]
                   for scale in (1e-7, 1.0, 1e-3, 10.0, 1.0, 1e-2)]


def tfadam_steps(start, gradients, compiled: bool, monkeypatch, found_inf_at: int | None = None, lr_at_3: float | None = None):
    """The parameters after each TFAdam step, on the compiled module's step (``tf_adam``) or the
    ``_foreach`` one; optionally a step skipped through ``found_inf`` and lr changed before step 3."""
    from lstm_pl import fused, optim

    monkeypatch.setattr(optim, "compiled_kernels", fused.kernels if compiled else lambda: None)
    params = [torch.nn.Parameter(p.clone()) for p in start]
    optimizer = TFAdam(params, lr=1e-3)
    after = []
    for step, grads in enumerate(gradients):
        if step == 3 and lr_at_3 is not None:
            optimizer.param_groups[0]["lr"] = lr_at_3
        for p, g in zip(params, grads):
            p.grad = g.clone()
        if found_inf_at is not None:
            optimizer.found_inf = torch.tensor(1.0 if step == found_inf_at else 0.0)
        optimizer.step()
        after.append([p.detach().clone() for p in params])
    return after


def compiled_module():
    from lstm_pl import fused

    if fused.kernels() is None:
        pytest.skip("the compiled module does not build here")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_cpu_step_is_tensorflow_1s_at_every_element_and_step(dtype, monkeypatch):
    """On the CPU TFAdam steps in one call of the compiled module: after each of six steps every
    element of four parameters is bit for bit tf.compat.v1.train.AdamOptimizer's. (The ``_foreach``
    path, kept for GPUs, differs from it in the last bit: 128 of the 10,906 float32 elements
    after six steps, a few in float64; checked below.)"""
    tf = pytest.importorskip("tensorflow", reason="the parity extra (tensorflow) is not installed")
    compiled_module()
    start, gradients = several_parameters(dtype)
    numpy_dtype = np.float32 if dtype == torch.float32 else np.float64
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(p.numpy()) for p in start]
        holders = [tf.compat.v1.placeholder(numpy_dtype, p.shape) for p in start]
        update = tf.compat.v1.train.AdamOptimizer(1e-3, 0.9, 0.999, 1e-8).apply_gradients(list(zip(holders, variables)))
        expected = []
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for grads in gradients:
                session.run(update, {h: g.numpy() for h, g in zip(holders, grads)})
                expected.append(session.run(variables))
    for step, (ours, theirs) in enumerate(zip(tfadam_steps(start, gradients, True, monkeypatch), expected)):
        for p, e in zip(ours, theirs):
            np.testing.assert_array_equal(p.numpy(), e, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_foreach_step_is_the_compiled_one_to_the_last_bits(dtype, monkeypatch):
    """The ``_foreach`` path (GPUs; a CPU where the module does not build) and the compiled step agree
    to the last bits at every step (within 2 ulp of the parameters' scale, about 1: the elements that
    differ differ by 1 ulp of their own), through a changed learning rate and a step skipped by
    ``found_inf`` (which leaves every element bit for bit as it was, on both)."""
    compiled_module()
    start, gradients = several_parameters(dtype)
    runs = [tfadam_steps(start, gradients, compiled, monkeypatch, found_inf_at=4, lr_at_3=1e-2) for compiled in (True, False)]
    ulp = torch.finfo(dtype).eps
    for step, (compiled, foreach) in enumerate(zip(*runs)):
        for a, b in zip(compiled, foreach):
            torch.testing.assert_close(a, b, rtol=0, atol=2 * ulp, msg=f"step {step + 1}")
    for run in runs:
        assert all(torch.equal(a, b) for a, b in zip(run[3], run[4]))  # step 5 skipped
        assert not any(torch.equal(a, b) for a, b in zip(run[4], run[5]))


@pytest.mark.parametrize("compiled", [True, False])
def test_a_resumed_float64_run_steps_on_bit_for_bit(compiled, monkeypatch):
    """torch's ``load_state_dict`` casts floating state to the parameter's dtype; TF1's β powers and
    constants stay float32, so a float64 run resumed from its optimizer state steps as the
    uninterrupted one (and the compiled step, which takes float32 powers only, runs)."""
    from lstm_pl import fused, optim

    if compiled:
        compiled_module()
    monkeypatch.setattr(optim, "compiled_kernels", fused.kernels if compiled else lambda: None)
    start, gradients = several_parameters(torch.float64)
    whole = [torch.nn.Parameter(p.clone()) for p in start]
    optimizer = TFAdam(whole, lr=1e-3)
    for step, grads in enumerate(gradients):
        if step == 3:
            saved = copy.deepcopy(optimizer.state_dict())  # a checkpoint: not the live tensors
            parts = [torch.nn.Parameter(p.detach().clone()) for p in whole]
        for p, g in zip(whole, grads):
            p.grad = g.clone()
        optimizer.step()
    resumed = TFAdam(parts, lr=1e-3)
    resumed.load_state_dict(saved)
    assert all(resumed.state[p]["beta1_power"].dtype == torch.float32 for p in parts)
    for grads in gradients[3:]:
        for p, g in zip(parts, grads):
            p.grad = g.clone()
        resumed.step()
    assert all(torch.equal(a, b) for a, b in zip(whole, parts))


def test_half_precision_parameters_step_on_the_foreach_path():
    """bfloat16 and float16 parameters (which the compiled step does not take) still step. (In
    bfloat16 β₂ = 0.999 rounds to 1, so TF1's update is 0 there: only that it runs is checked.)"""
    for dtype in (torch.bfloat16, torch.float16):
        weight = torch.nn.Parameter(torch.ones(4, dtype=dtype))
        optimizer = TFAdam([weight], lr=0.1)
        weight.grad = torch.ones_like(weight)
        optimizer.step()
        assert weight.dtype == dtype and (dtype == torch.bfloat16 or bool((weight < 1).all()))


def test_a_skipped_step_with_eps_zero_moves_nothing(monkeypatch):
    """The ``_foreach`` path (a GPU's) skipping through ``found_inf`` where ε = 0 and v = 0: θ is
    chosen, not multiplied by 0 (which would make it 0/0 = NaN)."""
    from lstm_pl import optim

    monkeypatch.setattr(optim, "compiled_kernels", lambda: None)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = TFAdam([weight], lr=0.1, eps=0.0)
    weight.grad = torch.full_like(weight, float("nan"))
    optimizer.found_inf = torch.tensor(1.0)
    optimizer.step()
    assert torch.equal(weight.detach(), torch.ones(3))
