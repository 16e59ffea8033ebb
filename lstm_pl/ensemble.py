"""An ensemble of language models scored as one: the evaluated model and the models of
``ensemble.checkpoints`` each read the same streams, and each word is scored by the mean of their
next-word distributions,

    p(w_{t+1} | w_≤t) = (1/M) Σ_m p_m(w_{t+1} | w_≤t),   log p = logsumexp_m(log p_m) - log M

(the averaged predictions of independently trained models; e.g. Zaremba, Sutskever and Vinyals 2014,
Table 1). Each member carries its own recurrent state (and learned-cache memory) from window to
window, as it did alone, so every member's own perplexity is unchanged; only the mixture is new.
The members must share the evaluated model's vocabulary (the tokenizer in their checkpoints).
"""

from __future__ import annotations

import math
from typing import Optional

import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer
from torch import Tensor

from .cache import check_language_model, perplexity_over_processes
from .checkpoints import read_checkpoint
from .console import shown
from .errors import ConfigError
from .tasks import LanguageModelTask

KEY = "ensemble.checkpoints"
NEED = "an ensemble mixes language models"  # what only a language model allows


def vocabulary(datamodule_state: dict | None) -> dict | None:
    """The word -> id map of the tokenizer in a text DataModule's state (``TextDataModule.state_dict``,
    as a checkpoint stores it), if it has one."""
    tokenizer = (datamodule_state or {}).get("tokenizer")
    return Tokenizer.from_str(tokenizer).get_vocab() if tokenizer else None


def member_checkpoint(path: str) -> dict:
    """The checkpoint at ``path`` (read once), or one line naming ``ensemble.checkpoints`` where it is
    not a readable language model's."""
    checkpoint = read_checkpoint(path, key=KEY)
    saved = checkpoint.get("hyper_parameters", {}).get("_class_path", "")
    if not saved.endswith(".LanguageModelTask"):
        raise ConfigError(f"{KEY}: {path} is a {saved or 'non-lstm_pl'} checkpoint, not a language model's")
    return checkpoint


class Ensemble(pl.Callback):
    """``val/perplexity_ensemble`` and ``test/perplexity_ensemble`` (and ``…_without_unk``) in the
    ``validate`` and ``test`` commands: the evaluated model and the language models of
    ``checkpoints`` scored as one (the module's docstring). ``checkpoints`` unset
    (``configs/base.yaml``'s ``ensemble:`` group): off. The model's own metrics are unchanged.
    Under several processes each scores its own streams and the sums are gathered."""

    def __init__(self, checkpoints: Optional[list[str]] = None):
        self.checkpoints = list(checkpoints or [])
        self.members: list[LanguageModelTask] = []
        self.states: list = []
        self.total: Tensor | None = None  # summed NLL and words, all and without <unk>

    @property
    def active(self) -> bool:
        return bool(self.checkpoints)

    def check_model(self, pl_module: pl.LightningModule) -> None:
        """One line, before the run writes anything, for a task that is not a language model or a
        member that is not a readable language-model checkpoint."""
        if not self.checkpoints:
            return
        check_language_model(pl_module, KEY, NEED)
        for path in self.checkpoints:
            member_checkpoint(path)

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Load the members (evaluation mode, on the model's device), each checked against the
        vocabulary the data builds."""
        if not self.checkpoints:
            return
        check_language_model(pl_module, KEY, NEED)
        if stage not in ("validate", "test"):
            return
        ours = vocabulary(trainer.datamodule.state_dict()) if trainer.datamodule is not None else None
        self.members = []
        for path in self.checkpoints:
            checkpoint = member_checkpoint(path)
            theirs = vocabulary(next((state for name, state in checkpoint.items() if name.endswith("DataModule")), None))
            if ours is not None and theirs is not None and theirs != ours:
                raise ConfigError(f"{KEY}: {path} was trained with another vocabulary ({len(theirs)} words; these data "
                                  f"settings build {len(ours)}); every member must read the same words")
            member = LanguageModelTask.load_from_checkpoint(path, map_location=pl_module.device, weights_only=True)
            self.members.append(member.eval())
        if trainer.is_global_zero:
            print(f"ensemble: the evaluated model and {', '.join(shown(path) for path in self.checkpoints)}", flush=True)

    def _start(self) -> None:
        self.states, self.total = [None] * len(self.members), None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    def _add(self, pl_module, outputs, batch) -> None:
        if not self.members or not outputs:
            return
        tokens, targets = batch
        log_probs = [outputs["target_log_probs"].float()]
        with torch.no_grad():
            for index, member in enumerate(self.members):
                carried = self.states[index] if member.hparams.stateful else None  # as it is scored alone
                member_log_probs, self.states[index], _, _ = member.net.score(tokens, targets, carried)
                log_probs.append(member_log_probs.float())
        mixed = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))  # log (1/M) Σ_m p_m
        unknown = pl_module.hparams.unknown_id
        known = targets != unknown if unknown is not None else torch.ones_like(targets, dtype=torch.bool)
        window = torch.stack([-mixed.sum(), mixed.new_tensor(float(mixed.numel())),
                              -mixed[known].sum(), known.sum().to(mixed.dtype)])
        self.total = window if self.total is None else self.total + window

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(pl_module, outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(pl_module, outputs, batch)

    def _log(self, trainer, pl_module, stage: str) -> None:
        if not self.members:
            return
        total = self.total if self.total is not None else torch.zeros(4, device=pl_module.device)
        self.total = None
        for suffix, part in (("", total[:2]), ("_without_unk", total[2:])):
            perplexity = perplexity_over_processes(part, trainer)
            if perplexity is not None and (suffix == "" or pl_module.hparams.unknown_id is not None):
                pl_module.log(f"{stage}/perplexity_ensemble{suffix}", perplexity)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module, "test")
