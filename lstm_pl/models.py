"""The networks, as plain ``nn.Module``s; the LightningModules in ``tasks.py`` only train them."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .cells import init_chrono_, init_tf1_, make_recurrent

Init = Literal["tf1", "torch"]


class SequenceRegressor(nn.Module):
    """Many-to-one regression: a recurrent stack reads x (B, T, F); a linear head maps the last
    hidden state to the output, y = W h_T + b (B, output_size).

    ``init="tf1"`` draws the weights as the TensorFlow 1 original did (``init_tf1_`` for the
    recurrent stack; head weight truncated normal σ = 0.01, head bias standard normal);
    ``init="torch"`` keeps PyTorch's defaults. ``chrono_t_max`` then redraws the input and forget
    gate biases by chrono initialisation for dependencies up to that many steps (``init_chrono_``).
    """

    def __init__(self, input_size: int, output_size: int = 1, cell: str = "lstm", hidden_size: int = 50,
                 num_layers: int = 1, init: Init = "tf1", chrono_t_max: float | None = None):
        super().__init__()
        self.rnn = make_recurrent(cell, input_size, hidden_size, num_layers)
        self.head = nn.Linear(hidden_size, output_size)
        if init == "tf1":
            init_tf1_(self.rnn)
            with torch.no_grad():
                nn.init.trunc_normal_(self.head.weight, std=0.01, a=-0.02, b=0.02)  # tf.truncated_normal: ±2σ
                nn.init.normal_(self.head.bias)
        if chrono_t_max is not None:
            init_chrono_(self.rnn, chrono_t_max)

    def forward(self, x: Tensor) -> Tensor:
        outputs, _ = self.rnn(x)
        return self.head(outputs[:, -1])

    @torch.no_grad()
    def closed_loop(self, window: Tensor, steps: int) -> Tensor:
        """Long-term prediction: from ``window`` (T, 1) predict one value, slide the window over
        it, and repeat ``steps`` times, so every prediction after the first is made from the
        model's own outputs, not from the data. Returns (steps,)."""
        window = window.clone()
        predictions = []
        for _ in range(steps):
            y = self(window[None])[0]  # (1,)
            predictions.append(y)
            window = torch.cat([window[1:], y[None]])
        return torch.cat(predictions)
