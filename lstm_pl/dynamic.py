"""Dynamic evaluation (Krause, Kahembwe, Murray and Renals 2018, "Dynamic Evaluation of Neural
Sequence Models", the SGD form): at evaluation a copy of the language model goes on learning from
the text it has just scored, so that what a play has said (its names, its turns of phrase) grows
likelier in what follows:

    score window k with θ_k,   then   θ_{k+1} = θ_k - η ∇L_k(θ_k) + λ (θ_0 - θ_k)

L_k is the mean cross-entropy of window k over the evaluation's streams, θ_0 the evaluated weights,
η ``lr`` and λ ``decay`` (a pull back towards θ_0). Each window is scored before anything is learned
from it, so no word helps to predict itself. The trained weights, their checkpoints and the plain
metrics stay as they are: the copy is made for each evaluation and thrown away after it.
"""

from __future__ import annotations

import copy
from typing import Optional

import pytorch_lightning as pl
import torch
from jsonargparse.typing import ClosedUnitInterval, PositiveFloat
from torch import Tensor, nn

from .cache import CacheScore, NeuralCache, check_language_model, perplexity_over_processes


def dynamic_nll(net: nn.Module, windows, lr: float, decay: float, stateful: bool = True,
                cached: CacheScore | None = None) -> Tensor:
    """The summed negative log-likelihood of the target words of ``windows`` ((x, y) pairs of
    (B, T) word ids, each row continuing the same row of the window before) and their count, under
    dynamic evaluation of ``net`` (a ``WordLanguageModel``, adapted in place: pass a copy).
    ``cached``: the same words are also scored with the cache mixed in, on the adapted model's
    outputs."""
    net.eval()  # no dropout: the model is scored, and learns, as evaluated
    parameters = list(net.parameters())
    prior = [parameter.detach().clone() for parameter in parameters]  # θ_0
    state, total = None, None
    for x, y in windows:
        log_probs, state, hidden, _ = net.score(x, y, state if stateful else None)  # (B, T), scored by θ_k
        window = torch.stack([-log_probs.detach().sum(), log_probs.new_tensor(float(y.numel()))])
        total = window if total is None else total + window
        if cached is not None:
            cached.add(hidden, y, log_probs)
        net.zero_grad(set_to_none=True)
        (-log_probs.mean()).backward()                                                    # ∇L_k(θ_k)
        with torch.no_grad():
            for parameter, start in zip(parameters, prior):
                if parameter.grad is not None:  # θ_{k+1} = θ_k - η ∇L_k(θ_k) + λ (θ_0 - θ_k)
                    parameter.add_(torch.sub(start, parameter).mul_(decay).sub_(parameter.grad, alpha=lr))
    return total


class DynamicEvaluation(pl.Callback):
    """``val/perplexity_dynamic`` and ``test/perplexity_dynamic`` in the ``validate`` and ``test``
    commands: the language model's perplexity under dynamic evaluation (see the module's
    docstring), ``lr`` η and ``decay`` λ; ``lr`` unset (``configs/base.yaml``'s ``dynamic_eval:``
    group): off. With the continuous cache on (``cache:``), also ``…/perplexity_dynamic_with_cache``:
    the adapted model's words mixed with the cache. Not during ``fit``'s validations: nothing there
    reads it, and each costs a pass of backpropagation over the split. It scores exactly the
    batches the evaluation scored (kept as they pass: word ids, a few MB at most), in their order;
    under several processes each adapts its own copy on its own streams."""

    def __init__(self, lr: Optional[PositiveFloat] = None, decay: ClosedUnitInterval = 0.0):
        self.lr, self.decay = lr, decay
        self.windows: list[list[Tensor]] = []  # the evaluation's batches so far

    @property
    def active(self) -> bool:
        return self.lr is not None

    def check_model(self, pl_module: pl.LightningModule) -> None:
        """Dynamic evaluation adapts a language model: one line for any other task (the CLI asks
        before the run writes anything; ``setup`` asks again for a Trainer built by hand)."""
        if self.lr is not None:
            check_language_model(pl_module, "dynamic_eval.lr", "dynamic evaluation adapts a language model")

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.check_model(pl_module)

    def _keep(self, trainer, batch) -> None:
        if self.lr is not None and trainer.state.fn in ("validate", "test"):
            with torch.inference_mode(False):  # Lightning's evaluation tensors cannot take part in a backward
                self.windows.append([part.clone() for part in batch])

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.windows = []

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.windows = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep(trainer, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep(trainer, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":
            self._evaluate(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._evaluate(trainer, pl_module, "test")

    def _evaluate(self, trainer, pl_module, stage: str) -> None:
        if self.lr is None:
            return
        windows, self.windows = self.windows, []
        cache = next((callback for callback in trainer.callbacks if isinstance(callback, NeuralCache)), None)
        cached = cache.new_score() if cache is not None else None
        # Lightning evaluates under inference mode; the copy must take gradients, and cuDNN's LSTM
        # takes a backward only in training mode (the copy is scored in evaluation mode, no dropout).
        with torch.inference_mode(False), torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            net = copy.deepcopy(pl_module.net)
            total = dynamic_nll(net, windows, self.lr, self.decay, pl_module.hparams.stateful, cached)
        perplexity = perplexity_over_processes(total, trainer)
        if perplexity is not None:
            pl_module.log(f"{stage}/perplexity_dynamic", perplexity)
        with_cache = cached.perplexity(trainer) if cached is not None else None
        if with_cache is not None:
            pl_module.log(f"{stage}/perplexity_dynamic_with_cache", with_cache)
