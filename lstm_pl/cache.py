"""The continuous cache (Grave, Joulin and Usunier 2017, "Improving Neural Language Models with a
Continuous Cache"; ``pointer.py`` of salesforce/awd-lstm-lm): at evaluation, the language model's
next-word distribution is mixed with one that points back at the words that followed the most
similar recent hidden states of the same text:

    p_cache(w | h_t) ∝ Σ_{i ∈ [t - window, t)} [x_{i+1} = w] · exp(θ · h_t·h_i)
    p(w | h_t) = (1 - λ) · p_model(w | h_t) + λ · p_cache(w | h_t)

h_t is the last recurrent layer's output (the decoder's input) at step t; x_{i+1}, the word that
followed step i, is the target of step i. No weight changes: the cache is a way of scoring a
trained model, most useful on text that repeats its own rare words (the names of a play). The
first step of a text has no history and is scored by the model alone.
"""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl
import torch
from jsonargparse.typing import OpenUnitInterval, PositiveFloat, PositiveInt
from torch import Tensor

from .errors import ConfigError
from .models import pointer
from .tasks import LanguageModelTask


class CacheMemory:
    """The last ``window`` hidden states of each stream (B, ≤window, H) and the words that followed
    them (B, ≤window): what ``probabilities`` points back at, window after window."""

    def __init__(self, window: int):
        self.window = window
        self.hidden: Tensor | None = None
        self.targets: Tensor | None = None

    def probabilities(self, hidden: Tensor, targets: Tensor, theta: float) -> tuple[Tensor, Tensor]:
        """For one window of each stream (hidden (B, T, H), targets (B, T)), in order after the
        windows before: p_cache(target_t | h_t) (B, T), and whether step t had any history (B, T)."""
        hidden = hidden.detach().to(torch.promote_types(hidden.dtype, torch.float32))  # half precision: scored in float32
        targets = targets.detach()
        keys = hidden if self.hidden is None else torch.cat([self.hidden, hidden], dim=1)
        values = targets if self.targets is None else torch.cat([self.targets, targets], dim=1)
        p_cache, has_history = pointer(hidden, keys, values, targets, self.window, theta)
        self.hidden, self.targets = keys[:, -self.window:], values[:, -self.window:]
        return p_cache, has_history.expand_as(p_cache)


class CacheScore:
    """The words of one evaluation scored with the cache mixed in: p = (1 - λ)·p_model + λ·p_cache
    where the step has history, p_model where it has none; keeps their summed negative
    log-likelihood and their count (``add`` window after window, ``perplexity`` at the end)."""

    def __init__(self, interpolation: float, theta: float, window: int):
        self.interpolation, self.theta = interpolation, theta
        self.memory = CacheMemory(window)
        self.total: Tensor | None = None

    def add(self, hidden: Tensor, targets: Tensor, target_log_probs: Tensor) -> None:
        """One window of each stream: the last layer's output (B, T, H), the targets (B, T) and
        their log-probabilities under the model (B, T)."""
        p_cache, has_history = self.memory.probabilities(hidden, targets, self.theta)
        p_model = target_log_probs.detach().to(p_cache.dtype).exp()
        mixed = torch.where(has_history, (1 - self.interpolation) * p_model + self.interpolation * p_cache, p_model)
        window = torch.stack([-mixed.log().sum(), mixed.new_tensor(float(mixed.numel()))])
        self.total = window if self.total is None else self.total + window

    def perplexity(self, trainer: pl.Trainer) -> Tensor | None:
        return perplexity_over_processes(self.total, trainer)


def perplexity_over_processes(total: Tensor | None, trainer: pl.Trainer) -> Tensor | None:
    """exp(Σ NLL / Σ words) of ``total`` = (summed NLL, words) over every process's words (every
    process takes part in the sum, one without words, ``None``, too); None where none scored any."""
    total = total if total is not None else torch.zeros(2, device=trainer.strategy.root_device)
    total = trainer.strategy.reduce(total, reduce_op="sum")
    return torch.exp(total[0] / total[1]).float() if total[1] > 0 else None


def check_language_model(pl_module: pl.LightningModule, setting: str, need: str) -> None:
    """One line for an evaluation-time scorer (``setting`` set) on a task that is not a language
    model; ``need``: what the scorer does, which only a language model allows."""
    if not isinstance(pl_module, LanguageModelTask):
        raise ConfigError(f"{setting}: {need}; {type(pl_module).__name__} is not one (leave {setting} unset)")


class NeuralCache(pl.Callback):
    """``val/perplexity_with_cache`` and ``test/perplexity_with_cache``: the language model's
    perplexity with its distribution mixed with the continuous cache (see the module's docstring):
    ``interpolation`` λ, ``theta`` θ, ``window`` the steps remembered per stream. ``interpolation``
    unset (``configs/base.yaml``'s ``cache:`` group): off. The plain metrics, the checkpoints and
    every schedule stay on the model alone; this only adds a score. The streams' order is the
    evaluation's (each row of a batch continues the same row before it), and the memory starts
    empty at each evaluation."""

    def __init__(self, interpolation: Optional[OpenUnitInterval] = None, theta: PositiveFloat = 1.0,
                 window: PositiveInt = 1000):
        self.interpolation, self.theta, self.window = interpolation, theta, window
        self.score: CacheScore | None = None  # the evaluation under way

    @property
    def active(self) -> bool:
        return self.interpolation is not None

    def new_score(self) -> CacheScore | None:
        """An empty score with these settings (None where the cache is off): also what
        ``DynamicEvaluation`` mixes its adapted model's words with."""
        return None if self.interpolation is None else CacheScore(self.interpolation, self.theta, self.window)

    def check_model(self, pl_module: pl.LightningModule) -> None:
        """The cache scores words: one line for any other task (the CLI asks before the run writes
        anything; ``setup`` asks again for a Trainer built by hand)."""
        if self.interpolation is not None:
            check_language_model(pl_module, "cache.interpolation", "the continuous cache scores a language model")

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.check_model(pl_module)

    def _start(self) -> None:
        self.score = self.new_score()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    def _add(self, outputs) -> None:
        if self.score is not None and outputs:
            self.score.add(outputs["hidden"], outputs["targets"], outputs["target_log_probs"])

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(outputs)

    def _log(self, trainer, pl_module, stage: str) -> None:
        if self.score is None:
            return
        perplexity, self.score = self.score.perplexity(trainer), None
        if perplexity is not None:
            pl_module.log(f"{stage}/perplexity_with_cache", perplexity)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module, "test")
