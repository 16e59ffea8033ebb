"""Closed-loop generation feeds the model's own predictions back; the regressor's shapes."""

import torch

from lstm_pl import ManyToOneSettings, ManyToOne, closed_loop


def test_closed_loop_feeds_back_predictions():
    last_plus_one = lambda x: x[:, -1] + 1.0  # (1, T, 1) -> (1, 1): the last value plus one
    window = torch.zeros(25, 1)
    out = closed_loop(last_plus_one, window, steps=226)
    assert out.shape == (226,)
    # Fed back, each prediction is the previous plus one: 1, 2, 3, ...; fed the data (zeros), all would be 1.
    assert torch.equal(out, torch.arange(1, 227, dtype=torch.float32))
    assert torch.equal(window, torch.zeros(25, 1))  # the caller's window is left as it was


def test_forward_shapes():
    model = ManyToOne(ManyToOneSettings(input_size=2, output_size=1, hidden_size=7, num_layers=2))
    assert model(torch.randn(5, 30, 2)).shape == (5, 1)
