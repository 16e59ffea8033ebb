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
of all time steps done in one matrix product so that only the recurrence is a loop: on the CPU a
compiled one (``fused_lstm.cpp``, see ``lstm_pl.fused``), elsewhere or where it cannot be built
the eager PyTorch loop below. Both compute the same equations. ``lstm``'s ``nn.LSTM`` (``LSTM``)
runs its own weights on that compiled loop where it is measured faster than oneDNN for its shape.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

Cell = Literal["rnn", "lstm", "lstm_peephole", "lstm_cec"]
CELLS: tuple[str, ...] = Cell.__args__  # type: ignore[attr-defined]
WITH_FORGET_GATE: tuple[str, ...] = ("lstm", "lstm_peephole")  # rnn has no gates, lstm_cec no forget gate

State = Tensor | tuple[Tensor, Tensor]


class LSTMRecurrence(torch.autograd.Function):
    """The recurrent half of a hand-written LSTM layer, with its backward pass written out.

    Input: ``x_proj`` (T, B, G·H) = W x_t + b for every step (one matrix product, done outside;
    G = 4 gate blocks i, f, g, o, or 3 without a forget gate), the initial state ``h0``, ``c0``
    (B, H), ``weight_hh`` (G·H, H), ``peephole`` (3, H) or None, and ``kernels``: the compiled
    module of ``lstm_pl.fused`` to run both loops with, or None for the eager loops here.
    Output: the hidden states (T, B, H) and the final cell state (B, H).

    Why by hand: autograd would record ~15 small operations per time step and replay them one by
    one; here the forward saves the gate activations, the backward walks the steps once with a
    few fused element-wise operations and one (B, G·H)·(G·H, H) product per step, and the
    weight gradients come out of single large products over all steps:
        dU = Σ_t δa_tᵀ h_{t-1},   δh_{t-1} = δa_t U,   δW, δb, δx from δa (outside, by autograd).
    """

    @staticmethod
    def forward(ctx, x_proj, h0, c0, weight_hh, peephole, kernels=None):
        ctx.kernels = kernels
        if kernels is not None:  # the same loop, each step's element-wise work fused (fused_lstm.cpp)
            empty = x_proj.new_empty(0)
            acts, h, c, tanh_c = kernels.forward(x_proj.contiguous(), h0, c0, weight_hh.contiguous(),
                                                 empty if peephole is None else peephole)
            ctx.save_for_backward(acts, h, c, tanh_c, weight_hh, peephole)
            return h[1:], c[-1]
        steps, batch, width = x_proj.shape
        hidden = h0.shape[1]
        gates = width // hidden  # blocks i, f, g, o; without a forget gate i, g, o
        forget_gate = gates == 4
        n_sig = gates - 2        # the leading sigmoid blocks: i, f or just i
        acts = torch.empty_like(x_proj)  # the activated gates, kept for the backward pass
        h = x_proj.new_empty(steps + 1, batch, hidden)
        c = x_proj.new_empty(steps + 1, batch, hidden)
        tanh_c = x_proj.new_empty(steps, batch, hidden)
        h[0], c[0] = h0, c0
        w_hh_t = weight_hh.t()
        # Per-step views made once (indexing inside the loop would cost more than the arithmetic).
        act = acts.view(steps, batch, gates, hidden)
        a_t, sig_t = acts.unbind(0), act[:, :, :n_sig].unbind(0)
        i_t, f_t, g_t, o_t = (act[:, :, k].unbind(0) for k in (0, 1, -2, -1))
        x_t, h_t, c_t, tc_t = x_proj.unbind(0), h.unbind(0), c.unbind(0), tanh_c.unbind(0)
        c_column_t = c.unsqueeze(2).unbind(0)  # c(t) as (B, 1, H), to broadcast over the i, f blocks
        p_sig = peephole[:n_sig] if peephole is not None else None
        for t in range(steps):
            torch.addmm(x_t[t], h_t[t], w_hh_t, out=a_t[t])
            if peephole is not None:  # i and f look at c(t-1)
                sig_t[t].addcmul_(p_sig, c_column_t[t])
            torch.sigmoid_(sig_t[t])
            torch.tanh_(g_t[t])
            if forget_gate:  # c' = f ⊙ c + i ⊙ g
                torch.mul(f_t[t], c_t[t], out=c_t[t + 1]).addcmul_(i_t[t], g_t[t])
            else:            # c' = c + i ⊙ g: the bare carousel
                torch.addcmul(c_t[t], i_t[t], g_t[t], out=c_t[t + 1])
            if peephole is not None:  # o looks at c(t)
                o_t[t].addcmul_(peephole[2], c_t[t + 1])
            torch.sigmoid_(o_t[t])
            torch.mul(o_t[t], torch.tanh(c_t[t + 1], out=tc_t[t]), out=h_t[t + 1])  # h' = o ⊙ tanh(c')
        ctx.save_for_backward(acts, h, c, tanh_c, weight_hh, peephole)
        return h[1:], c[steps]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs, grad_c_last):
        acts, h, c, tanh_c, weight_hh, peephole = ctx.saved_tensors
        if ctx.kernels is not None:
            empty = acts.new_empty(0)
            grad_a, grad_h, grad_c, grad_peephole = ctx.kernels.backward(
                empty if grad_hs is None else grad_hs.contiguous(),
                empty if grad_c_last is None else grad_c_last.contiguous(),
                acts, c, tanh_c, weight_hh.contiguous(), empty if peephole is None else peephole)
            grad_peephole = grad_peephole if peephole is not None else None
        else:
            grad_a, grad_h, grad_c, grad_peephole = LSTMRecurrence.eager_backward(
                grad_hs, grad_c_last, acts, h, c, tanh_c, weight_hh, peephole)
        steps, batch, hidden = tanh_c.shape
        grad_flat, h_flat = grad_a.view(steps * batch, -1), h[:-1].reshape(steps * batch, hidden)
        grad_weight_hh = ctx.kernels.matmul_tn(grad_flat, h_flat) if ctx.kernels is not None else grad_flat.t() @ h_flat
        return grad_a, grad_h, grad_c, grad_weight_hh, grad_peephole, None

    @staticmethod
    def eager_backward(grad_hs, grad_c_last, acts, h, c, tanh_c, weight_hh, peephole):
        """δa for every step, δh0, δc0 and δp (or None), one step at a time with PyTorch operators."""
        steps, batch, hidden = tanh_c.shape
        gates = acts.shape[2] // hidden
        forget_gate, n_sig = gates == 4, gates - 2
        act = acts.view(steps, batch, gates, hidden)
        i, g, o = act[:, :, 0], act[:, :, -2], act[:, :, -1]
        # Every factor that does not depend on the incoming gradient, for all steps at once:
        #   δa_o = δh ⊙ tanh(c) ⊙ o(1-o)                      = δh ⊙ factor_o
        #   δc  += δh ⊙ o ⊙ (1 - tanh²c) + δa_o ⊙ p_o          = δh ⊙ factor_c
        #   δa_i = δc ⊙ g ⊙ i(1-i),  δa_f = δc ⊙ c₋ ⊙ f(1-f),  δa_g = δc ⊙ i ⊙ (1-g²)   = δc ⊙ factor_ifg
        #   δc₋  = δc ⊙ f + δa_i ⊙ p_i + δa_f ⊙ p_f            = δc ⊙ carry
        factor_ifg = torch.empty(steps, batch, gates - 1, hidden, dtype=acts.dtype, device=acts.device)
        factor_ifg[:, :, 0] = g * i * (1 - i)
        if forget_gate:
            f = act[:, :, 1]
            factor_ifg[:, :, 1] = c[:-1] * f * (1 - f)
        factor_ifg[:, :, -1] = i * (1 - g * g)
        factor_o = tanh_c * o * (1 - o)
        factor_c = o * (1 - tanh_c * tanh_c)
        carry = f.clone() if forget_gate else None
        if peephole is not None:
            factor_c.addcmul_(factor_o, peephole[2])
            leak = (factor_ifg[:, :, :n_sig] * peephole[:n_sig]).sum(2)
            carry = carry + leak if forget_gate else leak + 1

        grad_a = torch.empty_like(acts)
        grad = grad_a.view(steps, batch, gates, hidden)
        d_t, d_o_t, d_ifg_t = grad_a.unbind(0), grad[:, :, -1].unbind(0), grad[:, :, :-1].unbind(0)
        factor_o_t, factor_c_t, factor_ifg_t = factor_o.unbind(0), factor_c.unbind(0), factor_ifg.unbind(0)
        carry_t = carry.unbind(0) if carry is not None else None
        grad_hs_t = grad_hs.unbind(0) if grad_hs is not None else None
        grad_h = grad_hs_t[-1].clone() if grad_hs is not None else torch.zeros_like(h[0])
        grad_c_column = (grad_c_last.clone() if grad_c_last is not None else torch.zeros_like(c[0])).unsqueeze(1)
        grad_c = grad_c_column[:, 0]  # δc, updated in place; grad_c_column is the same memory as (B, 1, H)
        for t in reversed(range(steps)):
            torch.mul(grad_h, factor_o_t[t], out=d_o_t[t])
            grad_c.addcmul_(grad_h, factor_c_t[t])
            torch.mul(grad_c_column, factor_ifg_t[t], out=d_ifg_t[t])
            if carry_t is not None:
                grad_c.mul_(carry_t[t])
            if t > 0 and grad_hs is not None:  # δh₋ = δa U, plus what the layer above sends to h₋
                grad_h = torch.addmm(grad_hs_t[t - 1], d_t[t], weight_hh)
            else:
                grad_h = d_t[t] @ weight_hh
        grad_peephole = None
        if peephole is not None:  # δp_i = Σ δa_i ⊙ c₋, δp_f = Σ δa_f ⊙ c₋, δp_o = Σ δa_o ⊙ c
            grad_peephole = torch.zeros_like(peephole)
            grad_peephole[:n_sig] = (grad[:, :, :n_sig] * c[:-1, :, None]).sum((0, 1))
            grad_peephole[2] = (grad[:, :, -1] * c[1:]).sum((0, 1))
        return grad_a, grad_h, grad_c, grad_peephole


class InputProjection(torch.autograd.Function):
    """x Wᵀ + b for every step at once (x (T·B, F), W (G·H, F), b (G·H)) on the compiled kernels' matrix
    loop, forward and backward: the sums in the order of the evaluation kernel (which projects step by
    step), and dW = δaᵀ x over all T·B rows where MKL is slow at these skinny shapes (0.8 ms for the
    adding problem's (400, 2,500)·(2,500, 2) on this project's machines, 0.05 ms here)."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernels):
        ctx.save_for_backward(x, weight)
        ctx.kernels = kernels
        return kernels.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = ctx.kernels.matmul(grad, weight) if ctx.needs_input_grad[0] else None
        grad_weight = ctx.kernels.matmul_tn(grad, x) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None


class LSTMLayer(nn.Module):
    """One hand-written LSTM layer: optional forget gate, optional peepholes (equations above).

    Parameters follow PyTorch's layout, gate blocks stacked in the order i, f, g, o (f absent
    without a forget gate): ``weight_ih`` (G·H, F), ``weight_hh`` (G·H, H), one ``bias`` (G·H),
    and the diagonal peephole weights ``peephole`` (3, H) for p_i, p_f, p_o (p_f unused
    without a forget gate).
    """

    def __init__(self, input_size: int, hidden_size: int, forget_gate: bool = True, peephole: bool = False,
                 fused: bool = True):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.forget_gate = forget_gate
        self.fused = fused  # on the CPU, use the compiled kernels where they build (lstm_pl.fused)
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
            state = (x.new_zeros(batch, self.hidden_size), x.new_zeros(batch, self.hidden_size))
        from . import fused  # here, not at import: nothing compiles until a hand-written cell runs

        kernels = fused.kernels() if self.fused and x.device.type == "cpu" else None
        return run_layer(x, state, self.weight_ih, self.bias, self.weight_hh, self.peephole, kernels)


def run_layer(x: Tensor, state: tuple[Tensor, Tensor], weight_ih: Tensor, bias: Tensor, weight_hh: Tensor,
              peephole: Tensor | None, kernels) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One LSTM layer over x (B, T, F) from state (h, c) each (B, H), with the weights in PyTorch's
    layout (``LSTMLayer``'s): on the compiled ``kernels``, or eagerly where they are None.
    Returns outputs (B, T, H) and the final (h, c)."""
    batch, steps, _ = x.shape
    # Evaluation keeps no activations for a backward pass, and projects each step's input inside the
    # loop; a trace (TensorBoard's graph) records only the autograd Functions, not a call into the module.
    if kernels is not None and not torch.is_grad_enabled() and not torch.jit.is_tracing():
        hs, c = kernels.forward_inference(x, weight_ih, bias, state[0], state[1], weight_hh,
                                          peephole if peephole is not None else x.new_empty(0))
        return hs.transpose(0, 1), (hs[-1], c)
    # W x + b for every step at once, time-major: the loop only adds U h.
    x_flat = x.transpose(0, 1).reshape(steps * batch, x.shape[2])
    if kernels is not None:
        x_proj = InputProjection.apply(x_flat, weight_ih, bias, kernels)
    else:
        x_proj = torch.addmm(bias, x_flat, weight_ih.t())
    hs, c = LSTMRecurrence.apply(x_proj.view(steps, batch, weight_ih.shape[0]), state[0], state[1], weight_hh, peephole,
                                 kernels)
    return hs.transpose(0, 1), (hs[-1], c)


class RNNRecurrence(torch.autograd.Function):
    """The recurrence of a plain tanh RNN layer on the compiled kernels, h' = tanh(x_proj + h Uᵀ),
    with its backward pass written out (δa = δh ⊙ (1 - h'²), δh₋ = δa U, dU = Σ_t δa_tᵀ h_{t-1}).
    Input: ``x_proj`` (T, B, H) = W x_t + b, ``h0`` (B, H), ``weight_hh`` (H, H); output (T, B, H)."""

    @staticmethod
    def forward(ctx, x_proj, h0, weight_hh, kernels):
        h = kernels.rnn_forward(x_proj, h0, weight_hh)
        ctx.save_for_backward(h, weight_hh)
        ctx.kernels = kernels
        return h[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs):
        h, weight_hh = ctx.saved_tensors
        grad_a, grad_h0 = ctx.kernels.rnn_backward(grad_hs, h, weight_hh)
        steps, batch, hidden = grad_a.shape
        grad_weight_hh = ctx.kernels.matmul_tn(grad_a.view(steps * batch, hidden), h[:-1].reshape(steps * batch, hidden))
        return grad_a, grad_h0, grad_weight_hh, None


def run_rnn_layer(x: Tensor, h0: Tensor, weight_ih: Tensor, bias: Tensor, weight_hh: Tensor, kernels) -> Tensor:
    """One tanh RNN layer over x (B, T, F) from h0 (B, H) on the compiled kernels: outputs (B, T, H)."""
    batch, steps, _ = x.shape
    if not torch.is_grad_enabled():
        return kernels.rnn_forward_inference(x, weight_ih, bias, h0, weight_hh).transpose(0, 1)
    x_proj = InputProjection.apply(x.transpose(0, 1).reshape(steps * batch, x.shape[2]), weight_ih, bias, kernels)
    return RNNRecurrence.apply(x_proj.view(steps, batch, weight_hh.shape[0]), h0, weight_hh, kernels).transpose(0, 1)


def steps_class(steps: int) -> int:
    """The power of two at or above ``steps``: sequence lengths measured alike (the compiled loop's
    lead over oneDNN changes with the length, as its activations leave the cache; a variable-length
    window changes it little)."""
    return 1 << max(steps - 1, 0).bit_length()


class CompiledWhereFaster:
    """For ``nn.LSTM`` and ``nn.RNN`` (``LSTM``, ``RNN`` below): the module's own parameters, state
    dict, equations and interface, run on the compiled kernels of ``lstm_pl.fused`` where they are
    faster for its shape.

    On the CPU, at the sizes of this project's tasks, the compiled loop beats oneDNN's (BENCHMARKS.md);
    at other sizes and on other CPUs it may not. So for each shape (batch, steps to the next power of
    two, input, hidden, layers, dtype, training or evaluation) both are timed once on this machine and
    the faster is remembered (``lstm_pl.fused.choose``; ``LSTM_PL_LSTM=onednn`` or ``fused`` fixes the
    choice). Either way the same weights give the same results to rounding; a machine's choice stays
    the same from run to run, so that its runs repeat bit for bit. Elsewhere (GPU, packed sequences, a bidirectional or
    projected stack, ``torch.compile``, a trace such as TensorBoard's graph) it is the module itself.
    """

    def forward(self, input, hx=None):  # nn.LSTM's and nn.RNN's own argument names
        kernels = self.compiled_kernels(input)
        if kernels is None:
            return super().forward(input, hx)
        if hx is None:
            zeros = input.new_zeros(self.num_layers, input.shape[0], self.hidden_size)
            hx = (zeros, zeros) if isinstance(self, nn.LSTM) else zeros
        elif any(part.dtype != input.dtype for part in (hx if isinstance(hx, tuple) else (hx,))):
            return super().forward(input, hx)  # which says what does not match
        else:
            self.check_forward_args(input, hx, None)  # nn.LSTM's and nn.RNN's own shape checks
        return self.run_compiled(input, hx, kernels, dropout=self.training and self.dropout > 0)

    def __getstate__(self):
        """Pickled and copied without the kernel choices looked up here: another machine chooses its own."""
        state = self.__dict__.copy()
        state.pop("_kernel_choices", None)
        return state

    def run_compiled(self, x: Tensor, state, kernels, dropout: bool):
        """The stack on the compiled kernels: the module's layers, its dropout between them."""
        finals = []
        for k in range(self.num_layers):
            if k > 0 and dropout:
                x = nn.functional.dropout(x, self.dropout, training=True)
            weights = (getattr(self, f"weight_ih_l{k}"), getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}"),
                       getattr(self, f"weight_hh_l{k}"))
            if isinstance(self, nn.LSTM):
                x, final = run_layer(x, (state[0][k], state[1][k]), weights[0], weights[1], weights[2], None, kernels)
            else:
                x = run_rnn_layer(x, state[k], *weights, kernels)
                final = x[:, -1]
            finals.append(final)
        if isinstance(self, nn.LSTM):
            return x, (torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals]))
        return x, torch.stack(finals)

    def compiled_kernels(self, x):
        """The compiled kernels where this call should run on them, else None. The choice for a shape
        is looked up once per module (a forward of the sine's network takes 0.3 ms)."""
        from . import fused

        if not (isinstance(x, Tensor) and x.dim() == 3 and x.device.type == "cpu" and self.weight_ih_l0.device.type == "cpu"
                and x.dtype in (torch.float32, torch.float64)
                and not torch.compiler.is_compiling() and not torch.jit.is_scripting() and not torch.jit.is_tracing()):
            return None
        grad = torch.is_grad_enabled()
        setting = fused.lstm_setting()
        shape = (x.shape[0], steps_class(x.shape[1]), x.dtype, self.weight_ih_l0.dtype, grad, torch.get_num_threads(),
                 setting)
        choices = self.__dict__.setdefault("_kernel_choices", {})  # "fused" or "onednn" for each shape
        if shape not in choices:
            choices[shape] = self.choose_kernels(x, grad, setting)
        return fused.kernels() if choices[shape] == "fused" else None

    def choose_kernels(self, x: Tensor, grad: bool, setting: str) -> str:
        """"fused" or "onednn" for calls like this one (see the class)."""
        from . import fused

        if not (all(p.dtype == x.dtype for p in self.parameters()) and self.batch_first and self.bias
                and not self.bidirectional and self.proj_size == 0 and getattr(self, "nonlinearity", "tanh") == "tanh"):
            return "onednn"
        kernels = fused.kernels() if setting != "onednn" else None
        if kernels is None:
            return "onednn"
        if setting == "fused":
            return "fused"
        key = (f"{type(self).__bases__[-1].__name__} batch {x.shape[0]}, steps {steps_class(x.shape[1])}, "
               f"input {self.input_size}, hidden {self.hidden_size}, "
               f"{self.num_layers} layer{'s' if self.num_layers > 1 else ''}, {str(x.dtype).removeprefix('torch.')}, "
               f"{'training' if grad else 'evaluation'}")
        with torch.random.fork_rng(devices=[]):  # oneDNN's dropout draws in the measurement: not from the run's generator
            return fused.choose(key, self.contenders(x, kernels, grad), prefer="fused")

    def contenders(self, x: Tensor, kernels, grad: bool) -> dict:
        """Both paths on a sample of x's shape (as many steps as its class, ``steps_class``), leaving
        no gradient stored (the caller restores the random generator's state)."""
        sample = torch.randn(x.shape[0], steps_class(x.shape[1]), x.shape[2], dtype=x.dtype)
        zeros = sample.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
        state = (zeros, zeros) if isinstance(self, nn.LSTM) else zeros
        weights = [p for p in self.parameters() if p.requires_grad]

        def timed(forward):
            def run():
                out = forward()[0]
                if grad and weights:
                    torch.autograd.grad(out.sum(), weights, allow_unused=True)
            return run

        return {"fused": timed(lambda: self.run_compiled(sample, state, kernels, dropout=False)),
                "onednn": timed(lambda: super(CompiledWhereFaster, self).forward(sample, state))}


class LSTM(CompiledWhereFaster, nn.LSTM):
    """``nn.LSTM`` on the compiled kernels where they are faster for its shape (``CompiledWhereFaster``;
    BENCHMARKS.md: 0.65x oneDNN's step time at the sine's shape, 0.95x at the adding problem's)."""


class RNN(CompiledWhereFaster, nn.RNN):
    """``nn.RNN`` (tanh) on the compiled kernels where they are faster for its shape (``CompiledWhereFaster``)."""


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
        return RNN(input_size, hidden_size, nonlinearity="tanh", batch_first=True, **common)
    if cell == "lstm":
        return LSTM(input_size, hidden_size, batch_first=True, **common)
    if cell == "lstm_peephole":
        return StackedLSTM(input_size, hidden_size, peephole=True, **common)
    if cell == "lstm_cec":
        return StackedLSTM(input_size, hidden_size, forget_gate=False, **common)
    raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")


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
    constant trains identically, so the forget block starts at ``forget_bias``. The library
    layers' second bias (``bias_hh``) starts at zero, so that the sum is TF's bias (whether it
    trains is ``single_bias_``'s business). Peephole diagonals (shape (H,)) are glorot-uniform
    too, as TF1 draws them: a = √(6 / (H + H)).
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
        if layer["peephole"] is not None:
            hidden = layer["peephole"].shape[1]
            nn.init.uniform_(layer["peephole"], -math.sqrt(3.0 / hidden), math.sqrt(3.0 / hidden))


@torch.no_grad()
def single_bias_(rnn: nn.Module) -> None:
    """One trainable bias per gate, as TensorFlow has: ``nn.LSTM`` / ``nn.RNN`` add two
    (b_ih + b_hh), and Adam would move each by its own step, so ``bias_hh`` is zeroed and frozen
    and ``bias_ih`` alone trains. (The hand-written cells have one bias already.)"""
    for layer in recurrent_layers(rnn):
        if layer["bias_hh"] is not None:
            layer["bias_hh"].zero_()
            layer["bias_hh"].requires_grad_(False)


@torch.no_grad()
def init_chrono_(rnn: nn.Module, t_max: float) -> None:
    """Chrono initialisation of the gate biases (Tallec & Ollivier 2018): b_f = log U(1, T_max - 1),
    b_i = -b_f, so that forget gates start with characteristic memory times spread up to T_max
    steps instead of all near 1/(1 - σ(1)) ≈ 4 (and input gates open in proportion). Needs a
    cell with a forget gate (``WITH_FORGET_GATE``)."""
    for layer in recurrent_layers(rnn):
        hidden = layer["bias"].shape[0] // len(layer["gates"])
        b_f = torch.log(torch.empty(hidden, dtype=layer["bias"].dtype).uniform_(1.0, t_max - 1.0))
        bias = layer["bias"].view(len(layer["gates"]), hidden)
        bias[layer["gates"].index("f")] = b_f
        bias[layer["gates"].index("i")] = -b_f
        if layer["bias_hh"] is not None:
            layer["bias_hh"].zero_()
