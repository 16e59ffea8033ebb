"""The regressor's closed-loop generation feeds its own predictions back."""

import torch
from torch import nn

from lstm_pl import SequenceRegressor


class LastValuePlusOne(nn.Module):
    """A stand-in recurrent stack whose 'hidden state' is the input plus one, so y_t = x_T + 1."""

    def forward(self, x):
        return x + 1.0, None


def test_closed_loop_feeds_back_predictions():
    model = SequenceRegressor(input_size=1, hidden_size=1, init="torch")
    model.rnn = LastValuePlusOne()
    model.head = nn.Identity()
    window = torch.zeros(25, 1)
    out = model.closed_loop(window, steps=226)
    assert out.shape == (226,)
    # Fed back, each prediction is the previous plus one: 1, 2, 3, ...; fed the data (zeros), all would be 1.
    assert torch.equal(out, torch.arange(1, 227, dtype=torch.float32))
    assert torch.equal(window, torch.zeros(25, 1))  # the caller's window is left as it was


def test_forward_shapes():
    model = SequenceRegressor(input_size=2, output_size=1, hidden_size=7, num_layers=2)
    assert model(torch.randn(5, 30, 2)).shape == (5, 1)
