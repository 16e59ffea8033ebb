"""TFAdam is TensorFlow 1's AdamOptimizer: its ε-hat formula, checked by hand, and bit for bit
against tf.compat.v1.train.AdamOptimizer where TensorFlow is installed."""

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
