"""Averaged weights (``averaging:``, lstm_pl/averaging.py): the mean of the weights after each step
from the trigger on, read by validation and written as every checkpoint's weights, while training
goes on with the raw ones. Exact resume is tested with the other families in test_resume.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_pl import ConfigError, WeightAveraging
from lstm_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--trainer.limit_train_batches=6", "--trainer.limit_val_batches=2", "--data.init_args.seq_len=10",
        "--model.init_args.net.hidden_size=16", "--model.init_args.net.embedding_size=16",
        "--trainer.max_epochs=-1", "--trainer.max_steps=12", "--trainer.log_every_n_steps=1"]


def fit(tmp_path: Path, corpus_args: list[str], *more: str) -> Path:
    main(["fit", "--config", str(ROOT / "configs" / "shakespeare_best.yaml"),
          f"--trainer.logger.init_args.save_dir={tmp_path}", *corpus_args, *TINY, *more])
    return tmp_path / "shakespeare_best" / "version_0"


def test_checkpoints_hold_the_mean_of_the_weights_after_each_step(tmp_path, corpus_args, monkeypatch):
    """start_epoch 1 with 6 steps an epoch: the average of the weights after steps 6 to 12, under
    both names of the tied embedding and decoder; the raw weights kept to resume from."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    original = WeightAveraging.on_train_batch_end

    def record(self, trainer, pl_module, outputs, batch, batch_idx):
        seen[trainer.global_step] = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        original(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(WeightAveraging, "on_train_batch_end", record)
    run = fit(tmp_path, corpus_args, "--averaging.start_epoch=1")
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(value for key, value in last["callbacks"].items() if key.startswith("WeightAveraging"))
    assert state["count"] == 7 and state["started_at"] == 6
    for name in seen[12]:
        expected = torch.stack([seen[step][name] for step in range(6, 13)]).mean(0)
        torch.testing.assert_close(last["state_dict"][name], expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(state["raw"][name], seen[12][name])
        assert not torch.equal(last["state_dict"][name], seen[12][name]) or name.endswith("bias")
    assert torch.equal(last["state_dict"]["net.embedding.weight"], last["state_dict"]["net.decoder.weight"])


def test_validation_reads_the_average(tmp_path, corpus_args):
    """The last validation of the fit scored the average: ``validate`` of last.ckpt (whose weights are
    the average) gives the same val/loss, and the raw weights another."""
    run = fit(tmp_path, corpus_args, "--averaging.start_epoch=1")
    logged = [event.value for event in scalars(run, "val/loss")]
    main(["validate", "--config", str(ROOT / "configs" / "shakespeare_best.yaml"), *corpus_args, *TINY,
          f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    validated = scalars(run / "validate" / "version_0", "val/loss")[-1].value
    assert validated == pytest.approx(logged[-1], rel=1e-6)
    without = tmp_path / "without"
    plain = [event.value for event in scalars(fit(without, corpus_args), "val/loss")]
    assert plain[0] == pytest.approx(logged[0], rel=1e-6)  # before averaging: the same run
    assert abs(plain[-1] - logged[-1]) > 1e-4              # after: the average scores otherwise


def scalars(run: Path, tag: str):
    events = EventAccumulator(str(run))
    events.Reload()
    return sorted(events.Scalars(tag), key=lambda e: (e.wall_time, e.step))


def test_the_non_monotone_trigger_is_awd_lstms():
    """AWD-LSTM's main.py: switch once ``len(log) > n and val > min(log[:-n])``; until then each value
    joins the log. With n = 2 and 5, 4, 3, 3.5, 3.6, 3.7: 3.7 is worse than min(5, 4, 3)."""
    averaging = WeightAveraging(non_monotone=2)
    module = torch.nn.Linear(2, 1)
    for step, value in enumerate([5.0, 4.0, 3.0, 3.5, 3.6, 3.7], start=1):
        trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn="fit"), global_step=step * 10,
                                  current_epoch=step, callback_metrics={"val/loss": torch.tensor(value)})
        averaging.on_validation_end(trainer, module)
        assert averaging.averaging == (step == 6)
    assert averaging.started_at == 60 and averaging.history == pytest.approx([5.0, 4.0, 3.0, 3.5, 3.6])


def test_off_by_default_and_one_trigger_at_most(tmp_path, corpus_args):
    run = fit(tmp_path, corpus_args)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(value for key, value in last["callbacks"].items() if key.startswith("WeightAveraging"))
    assert state["started_at"] is None and "average" not in state
    with pytest.raises(ConfigError, match="not both"):
        WeightAveraging(non_monotone=5, start_epoch=3)


def test_a_start_epoch_the_run_never_reaches_is_said(tmp_path, corpus_args, caplog):
    """max_epochs shortened below averaging.start_epoch: the run ends on raw weights, one warning
    naming both keys; none where the start falls inside the run."""
    said = lambda: [r.getMessage() for r in caplog.records if "averaging.start_epoch" in r.getMessage()]
    for start, warned in ((2, True), (1, False)):
        caplog.clear()
        fit(tmp_path / str(start), corpus_args, f"--averaging.start_epoch={start}", "--trainer.max_epochs=2",
            "--trainer.max_steps=-1")
        assert len(said()) == warned and all("averaging.start_epoch is 2, trainer.max_epochs 2" in s for s in said()), said()
