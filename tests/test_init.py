"""The ``tf1`` initialiser draws what TensorFlow 1 drew."""

import math

import pytest
import torch

from lstm_pl import ManyToOneSettings, ManyToOne, init_tf1_, make_recurrent, single_bias_
from lstm_pl.cells import recurrent_layers


def uniform_bound_and_std(w, bound):
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.95 * bound  # really spread over the whole interval
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


@pytest.mark.parametrize("cell, gates", [("lstm", 4), ("rnn", 1), ("lstm_peephole", 4), ("lstm_cec", 3)])
def test_tf1_recurrent_kernels(cell, gates):
    torch.manual_seed(0)
    inputs, hidden = 3, 64
    rnn = make_recurrent(cell, inputs, hidden, num_layers=2)
    init_tf1_(rnn)
    for layer in recurrent_layers(rnn):  # tf1 zeroes the second bias; whether it trains is separate
        assert layer["bias_hh"] is None or (torch.all(layer["bias_hh"] == 0) and layer["bias_hh"].requires_grad)
    single_bias_(rnn)

    for k, layer in enumerate(recurrent_layers(rnn)):
        fan_in = (inputs if k == 0 else hidden) + hidden
        assert layer["weight_ih"].shape == (gates * hidden, inputs if k == 0 else hidden)
        assert layer["weight_hh"].shape == (gates * hidden, hidden)
        # glorot-uniform over the stacked (F + H, G·H) kernel, as TF1 draws it
        bound = math.sqrt(6 / (fan_in + gates * hidden))
        uniform_bound_and_std(torch.cat([layer["weight_ih"], layer["weight_hh"]], 1), bound)
        bias = layer["bias"].detach()
        if "f" in layer["gates"]:  # pytorch gate order i, f, g, o: the forget block starts at 1.0
            assert torch.all(bias[hidden : 2 * hidden] == 1.0)
            assert torch.all(bias[:hidden] == 0) and torch.all(bias[2 * hidden :] == 0)
        else:
            assert torch.all(bias == 0)
        if layer["bias_hh"] is not None:  # one trainable bias per gate, as in TF
            assert torch.all(layer["bias_hh"] == 0) and not layer["bias_hh"].requires_grad
        if layer["peephole"] is not None:
            uniform_bound_and_std(layer["peephole"].detach(), math.sqrt(3 / hidden))


def test_tf1_head_and_torch_default():
    torch.manual_seed(0)
    model = ManyToOne(ManyToOneSettings(input_size=1, output_size=4000, hidden_size=4000, init="tf1"))
    w, b = model.head.weight.detach(), model.head.bias.detach()
    assert w.abs().max() <= 0.02  # truncated at two standard deviations
    # a N(0, 0.01) truncated at ±2σ has standard deviation 0.01 · 0.8796
    assert w.std().item() == pytest.approx(0.01 * 0.8796, rel=0.02)
    assert b.std().item() == pytest.approx(1.0, rel=0.05) and abs(b.mean().item()) < 0.05
    default = ManyToOne(ManyToOneSettings(input_size=1, hidden_size=50, init="torch", single_bias=False))
    assert default.rnn.bias_hh_l0.requires_grad and default.rnn.bias_hh_l0.abs().sum() > 0
    assert default.head.weight.abs().max() <= 1 / math.sqrt(50)


def test_single_bias_trains_like_tensorflows():
    """With bias_hh frozen, an Adam step moves the gate bias once, not twice; with torch's init too."""
    for init in ("tf1", "torch"):
        model = ManyToOne(ManyToOneSettings(input_size=1, hidden_size=8, init=init))
        bias_hh_before, bias_ih_before = model.rnn.bias_hh_l0.detach().clone(), model.rnn.bias_ih_l0.detach().clone()
        assert not model.rnn.bias_hh_l0.requires_grad and torch.all(bias_hh_before == 0)
        adam = torch.optim.Adam(model.parameters(), lr=0.1)
        model(torch.randn(4, 5, 1)).square().mean().backward()
        adam.step()
        assert torch.equal(model.rnn.bias_hh_l0.detach(), bias_hh_before)  # the second bias never moves
        # the first moved by one Adam step, lr · m̂/(√v̂ + ε) = 0.1 · g/(|g| + ε) ≈ 0.1 · sign(g), where g ≠ 0
        moved = (model.rnn.bias_ih_l0.detach() - bias_ih_before).abs()
        assert moved.max() <= 0.1 + 1e-6 and (moved > 0.099).float().mean() > 0.5
