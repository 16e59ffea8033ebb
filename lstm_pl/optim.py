"""TensorFlow 1's Adam, for runs that must train exactly as the original did.

The original ran ``tf.train.AdamOptimizer(learning_rate, beta1, beta2)`` (ε = 1e-8). Its update
differs from ``torch.optim.Adam`` in where ε goes: TF1 folds both bias corrections into the step
size and adds ε to the raw root (the "ε-hat" form), PyTorch adds ε to the bias-corrected root:

    TF1:      lr_t = lr · √(1 - β₂ᵗ) / (1 - β₁ᵗ),     θ ← θ - lr_t · m / (√v + ε)
    PyTorch:  θ ← θ - lr / (1 - β₁ᵗ) · m / (√v / √(1 - β₂ᵗ) + ε)

with m ← m + (1 - β₁)(g - m), v ← v + (1 - β₂)(g² - v) in both. The two agree only where √v ≫ ε;
on the sine task they part by 2e-6 relative at step 2 and 0.15 by step 350. Select it in a config:

    optimizer:
      class_path: lstm_pl.optim.TFAdam
      init_args: {lr: 0.001, betas: [0.9, 0.999], eps: 1.0e-08}
"""

from __future__ import annotations

import torch


def compiled_kernels():
    """The compiled module (``lstm_pl.fused``) where it builds, else None: TFAdam's CPU step runs in it."""
    from . import fused

    return fused.kernels()


class TFAdam(torch.optim.Optimizer):
    """``tf.compat.v1.train.AdamOptimizer``'s update, step for step (``training_ops.ApplyAdam``).

    On the CPU one call of the compiled module does the update (``lstm_pl.fused``; bit for bit TF1's,
    tested element by element); elsewhere, or where it does not build, a few ``_foreach`` operations.
    As TF1 does: lr, β₁, β₂ and ε are float32 constants (TF converts Python floats to float32
    tensors) cast to the parameter's dtype before any arithmetic, so in float32 1 - β₁ is
    1f - 0.9f and in float64 lr is 0.0010000000474974513; the powers β₁ᵗ and β₂ᵗ are float32
    variables multiplied by β after every step (not recomputed as β^t); and the update is
    written in the kernel's order:
        m += (g - m)(1 - β₁);   v += (g² - v)(1 - β₂);   θ -= (m · lr_t) / (√v + ε)

    A step can be skipped on the device, without the host reading anything, as torch's fused
    optimizers skip one for ``GradScaler``: where the attribute ``found_inf`` is set (a float
    tensor, 1 or 0; the non-finite guard sets it, ``lstm_pl/guards.py``), a step with
    ``found_inf == 1`` leaves θ, m, v and the β powers bit for bit as they were (the gradients may be
    NaN), and one with 0 is bit for bit the ordinary step.
    """

    reads_found_inf = True  # what lstm_pl.guards.NonFiniteLoss looks for (torch's fused optimizers: _step_supports_amp_scaling)

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if not lr > 0 or not eps >= 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"TFAdam: lr must be positive, eps non-negative and betas in [0, 1), "
                             f"got lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))

    FLOAT32_STATE = ("beta1_power", "beta2_power", "beta1_32", "beta2_32")  # TF1's float32 variables and constants

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loading casts every floating state tensor to its parameter's dtype; TF1's β
        powers and β constants stay float32 (a resumed float64 run goes on bit for bit)."""
        super().load_state_dict(state_dict)
        for state in self.state.values():
            for key in self.FLOAT32_STATE:
                if key in state:
                    state[key] = state[key].to(torch.float32)

    @staticmethod
    def _settings(group: dict) -> list[float]:
        return [float(group["lr"]), *map(float, group["betas"]), float(group["eps"])]

    @classmethod
    def _constants(cls, group: dict, p: torch.Tensor) -> dict:
        """The group's hyperparameters as TF1 holds them for ``p``: float32 tensors, cast to its
        dtype; made once per parameter and again only when a scheduler changes the settings."""
        float32 = lambda value: torch.tensor(value, dtype=torch.float32, device=p.device)
        beta1_32, beta2_32 = (float32(b) for b in group["betas"])
        beta1, beta2 = beta1_32.to(p.dtype), beta2_32.to(p.dtype)
        return dict(lr=float32(group["lr"]).to(p.dtype), eps=float32(group["eps"]).to(p.dtype), beta1_32=beta1_32,
                    beta2_32=beta2_32, one_minus_beta1=1 - beta1, one_minus_beta2=1 - beta2, settings=cls._settings(group))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_kind: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(self._constants(group, p), m=torch.zeros_like(p), v=torch.zeros_like(p))
                    state["beta1_power"], state["beta2_power"] = state["beta1_32"].clone(), state["beta2_32"].clone()
                elif state["settings"] != self._settings(group):  # a scheduler moved lr or betas
                    state.update(self._constants(group, p))
                by_kind.setdefault((p.device, p.dtype), []).append(p)
            found_inf = getattr(self, "found_inf", None)
            for (device, dtype), params in by_kind.items():
                states = [self.state[p] for p in params]
                found_on = None if found_inf is None else found_inf.to(device, non_blocking=device.type != "cpu")
                kernels = compiled_kernels() if device.type == "cpu" and dtype in (torch.float32, torch.float64) else None
                if kernels is not None and all(p.is_contiguous() for p in params):
                    self._apply_compiled(kernels, params, states, found_on)
                else:
                    self._apply(params, states, found_on)
        return loss

    @staticmethod
    def _apply_compiled(kernels, params: list[torch.Tensor], states: list[dict], found_inf: torch.Tensor | None) -> None:
        """``_apply`` in one call of the compiled module (``tf_adam`` in ``lstm_pl/fused_lstm.cpp``):
        each element's operations rounded one by one in TF1's order, so bit for bit TF1's
        AdamOptimizer (``tests/test_optim.py``, every element of every step), without ~20 dispatches
        (``python -m benchmarks.adam``: 18 µs on sine against 95)."""
        first = states[0]  # the group's constants: every state of the call holds the same
        kernels.tf_adam(params, [p.grad for p in params], [s["m"] for s in states], [s["v"] for s in states],
                        [s["beta1_power"] for s in states], [s["beta2_power"] for s in states], first["lr"], first["eps"],
                        first["one_minus_beta1"], first["one_minus_beta2"], first["beta1_32"], first["beta2_32"],
                        found_inf if found_inf is not None else torch.empty(0))

    @staticmethod
    def _apply(params: list[torch.Tensor], states: list[dict], found_inf: torch.Tensor | None = None) -> None:
        """``ApplyAdam`` on parameters of one device and dtype, each with its own state, as a few
        ``_foreach`` operations (one dispatch for all of them where a loop would make ~15 per
        parameter): the GPU's path, and the CPU's where the compiled module does not build. Element
        for element the same operations in the same order, but ATen's kernels round some elements
        differently from TF1's in the last bit (128 of 10,906 float32 elements after six steps,
        ``tests/test_optim.py``); ``_apply_compiled`` does not.
        With ``found_inf`` (1: skip), the changes of m and v are multiplied by keep = 1 - found_inf
        (exact for 1; for 0 it adds ±0 to finite m and v, the gradients made 0 first), θ's is
        chosen (0 where skipped) and the powers multiplied by β or by 1, all on the device."""
        def column(key):
            return [state[key] for state in states]

        dtype, grads, m, v = params[0].dtype, [p.grad for p in params], column("m"), column("v")
        # lr_t = lr · √(1 - β₂ᵗ) / (1 - β₁ᵗ), every parameter's at once (the powers are float32, cast).
        beta1_power, beta2_power = (torch.stack(column(key)).to(dtype) for key in ("beta1_power", "beta2_power"))
        lr_t = torch.stack(column("lr")) * torch.sqrt(1 - beta2_power) / (1 - beta1_power)
        one_minus_beta1, one_minus_beta2, beta1_32, beta2_32 = (
            column(key) for key in ("one_minus_beta1", "one_minus_beta2", "beta1_32", "beta2_32"))
        if found_inf is not None:
            skip = found_inf.to(torch.bool)
            keep = 1 - found_inf.to(dtype)
            grads = [torch.where(skip, 0, g) for g in grads]
            one_minus_beta1, one_minus_beta2 = (torch._foreach_mul(c, keep) for c in (one_minus_beta1, one_minus_beta2))
            one = torch.ones((), dtype=torch.float32, device=found_inf.device)
            beta1_32, beta2_32 = ([torch.where(skip, one, b) for b in c] for c in (beta1_32, beta2_32))
        step = torch._foreach_sub(grads, m)                      # m += (g - m)(1 - β₁)
        torch._foreach_mul_(step, one_minus_beta1)
        torch._foreach_add_(m, step)
        step = torch._foreach_mul(grads, grads)                  # v += (g² - v)(1 - β₂)
        torch._foreach_sub_(step, v)
        torch._foreach_mul_(step, one_minus_beta2)
        torch._foreach_add_(v, step)
        step = torch._foreach_mul(m, lr_t.unbind())              # θ -= (m · lr_t) / (√v + ε)
        root = torch._foreach_sqrt(v)
        torch._foreach_add_(root, column("eps"))
        torch._foreach_div_(step, root)
        if found_inf is not None:  # chosen, not multiplied: with ε = 0 and v = 0 the step is 0/0
            step = [torch.where(skip, 0, s) for s in step]
        torch._foreach_sub_(params, step)
        torch._foreach_mul_(column("beta1_power"), beta1_32)
        torch._foreach_mul_(column("beta2_power"), beta2_32)
