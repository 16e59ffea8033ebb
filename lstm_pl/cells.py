"""Recurrent cells, from the theory chapter to the library LSTM, behind one factory.

Every recurrent stack built here reads a batch-first sequence ``x`` of shape (B, T, F) and
returns ``(outputs, state)`` like ``nn.LSTM``: outputs (B, T, H) of the top layer, and the
final state, ``h`` (L, B, H) for ``rnn`` and ``(h, c)`` for every LSTM variant.

Notation (one layer, one time step; ⊙ is the element-wise product, σ the logistic sigmoid):

    rnn            h' = tanh(W x + U h + b)
    lstm           i = σ(W_i x + U_i h + b_i)     input gate
                   f = σ(W_f x + U_f h + b_f)     forget gate
                   g = tanh(W_g x + U_g h + b_g)  cell input
                   o = σ(W_o x + U_o h + b_o)     output gate
                   c' = f ⊙ c + i ⊙ g             the constant error carousel, gated
                   h' = o ⊙ tanh(c')
    lstm_peephole  as lstm, but the gates look at the cell (Gers & Schmidhuber 2000):
                   i = σ(... + p_i ⊙ c),  f = σ(... + p_f ⊙ c),  o = σ(... + p_o ⊙ c')
    lstm_cec       the 1997 LSTM (Hochreiter & Schmidhuber): no forget gate, so
                   c' = c + i ⊙ g, the bare carousel whose error flows back unchanged.

``rnn`` and ``lstm`` run on ``nn.RNN`` and ``nn.LSTM`` (oneDNN on CPU, cuDNN on GPU); the two
variants the library lacks are written here by hand (``LSTMLayer``), with the input projection
of all time steps done in one matrix product so that only the recurrence is a Python loop.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

Cell = Literal["rnn", "lstm", "lstm_peephole", "lstm_cec"]
CELLS: tuple[str, ...] = Cell.__args__  # type: ignore[attr-defined]

State = Tensor | tuple[Tensor, Tensor]


class LSTMLayer(nn.Module):
    """One hand-written LSTM layer: optional forget gate, optional peepholes (equations above).

    Parameters follow PyTorch's layout, gate blocks stacked in the order i, f, g, o (f absent
    without a forget gate): ``weight_ih`` (G·H, F), ``weight_hh`` (G·H, H), one ``bias`` (G·H),
    and the diagonal peephole weights ``peephole`` (3, H) for p_i, p_f, p_o.
    """

    def __init__(self, input_size: int, hidden_size: int, forget_gate: bool = True, peephole: bool = False):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.forget_gate, self.has_peephole = forget_gate, peephole
        gates = 4 if forget_gate else 3
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(gates * hidden_size))
        self.peephole = nn.Parameter(torch.empty(3, hidden_size)) if peephole else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default for recurrent layers: every weight U(-1/√H, 1/√H)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, T, F), state (h, c) each (B, H) -> outputs (B, T, H), (h, c)."""
        batch, steps, _ = x.shape
        if state is None:
            h = x.new_zeros(batch, self.hidden_size)
            c = x.new_zeros(batch, self.hidden_size)
        else:
            h, c = state
        # W x + b for every step at once: the only big matrix product; the loop keeps U h.
        x_proj = torch.addmm(self.bias, x.reshape(batch * steps, -1), self.weight_ih.t()).view(batch, steps, -1)
        w_hh_t = self.weight_hh.t()
        outputs = []
        for t in range(steps):
            gates = torch.addmm(x_proj[:, t], h, w_hh_t)
            if self.forget_gate:
                i, f, g, o = gates.chunk(4, dim=1)
            else:
                (i, g, o), f = gates.chunk(3, dim=1), None
            if self.peephole is not None:
                i = i + self.peephole[0] * c
                if f is not None:
                    f = f + self.peephole[1] * c
            i, g = torch.sigmoid(i), torch.tanh(g)
            c = torch.sigmoid(f) * c + i * g if f is not None else c + i * g
            if self.peephole is not None:
                o = o + self.peephole[2] * c
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h, c)


class StackedLSTM(nn.Module):
    """Hand-written LSTM layers stacked like ``nn.LSTM(num_layers=L, dropout=p, batch_first=True)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0, **cell_kwargs):
        super().__init__()
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(LSTMLayer(size, hidden_size, **cell_kwargs) for size in sizes)
        self.dropout = nn.Dropout(dropout)
        self.hidden_size, self.num_layers = hidden_size, num_layers

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        hs, cs = [], []
        for k, layer in enumerate(self.layers):
            if k > 0:
                x = self.dropout(x)
            x, (h, c) = layer(x, None if state is None else (state[0][k], state[1][k]))
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))


def make_recurrent(cell: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0) -> nn.Module:
    """The batch-first recurrent stack for ``cell`` (one of ``CELLS``)."""
    common = dict(num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0)
    if cell == "rnn":
        return nn.RNN(input_size, hidden_size, nonlinearity="tanh", batch_first=True, **common)
    if cell == "lstm":
        return nn.LSTM(input_size, hidden_size, batch_first=True, **common)
    if cell == "lstm_peephole":
        return StackedLSTM(input_size, hidden_size, peephole=True, **common)
    if cell == "lstm_cec":
        return StackedLSTM(input_size, hidden_size, forget_gate=False, **common)
    raise ValueError(f"cell: unknown cell {cell!r}; choose one of {', '.join(CELLS)}")


def recurrent_layers(rnn: nn.Module) -> list[dict[str, Tensor | None]]:
    """Per layer, the weights in a common layout: ``weight_ih``, ``weight_hh``, ``bias``, ``bias_hh``
    (the library layers' second bias, else None), ``peephole`` (or None), ``gates`` (blocks in order)."""
    if isinstance(rnn, StackedLSTM):
        return [
            dict(weight_ih=l.weight_ih, weight_hh=l.weight_hh, bias=l.bias, bias_hh=None, peephole=l.peephole,
                 gates="ifgo" if l.forget_gate else "igo")
            for l in rnn.layers
        ]
    gates = "ifgo" if isinstance(rnn, nn.LSTM) else "h"
    return [
        dict(weight_ih=getattr(rnn, f"weight_ih_l{k}"), weight_hh=getattr(rnn, f"weight_hh_l{k}"),
             bias=getattr(rnn, f"bias_ih_l{k}"), bias_hh=getattr(rnn, f"bias_hh_l{k}"), peephole=None, gates=gates)
        for k in range(rnn.num_layers)
    ]


@torch.no_grad()
def init_tf1_(rnn: nn.Module, forget_bias: float = 1.0) -> None:
    """TensorFlow 1's initialisation of ``LSTMCell`` / ``BasicRNNCell`` stacks.

    TF1 keeps one kernel per layer over the stacked input [x; h], shape (F + H, G·H), drawn
    glorot-uniform: U(-a, a) with a = √(6 / (F + H + G·H)). Its bias is zero and the forget
    gate gets a constant ``forget_bias`` added at run time; a trainable bias started at that
    constant trains identically, so the forget block starts at ``forget_bias``. TF has one bias
    per gate where ``nn.LSTM`` has two (b_ih + b_hh, each moved by Adam): ``bias_hh`` is zeroed
    and frozen so the sum trains like TF's single bias. Peephole diagonals (shape (H,)) are
    glorot-uniform too, as TF1 draws them: a = √(6 / (H + H)).
    """
    for layer in recurrent_layers(rnn):
        w_ih, w_hh = layer["weight_ih"], layer["weight_hh"]
        rows, fan_in = w_ih.shape[0], w_ih.shape[1] + w_hh.shape[1]
        bound = math.sqrt(6.0 / (fan_in + rows))
        nn.init.uniform_(w_ih, -bound, bound)
        nn.init.uniform_(w_hh, -bound, bound)
        bias = layer["bias"]
        bias.zero_()
        if "f" in layer["gates"]:
            hidden = rows // len(layer["gates"])
            start = layer["gates"].index("f") * hidden
            bias[start : start + hidden] = forget_bias
        if layer["bias_hh"] is not None:
            layer["bias_hh"].zero_()
            layer["bias_hh"].requires_grad_(False)
        if layer["peephole"] is not None:
            hidden = layer["peephole"].shape[1]
            nn.init.uniform_(layer["peephole"], -math.sqrt(3.0 / hidden), math.sqrt(3.0 / hidden))
