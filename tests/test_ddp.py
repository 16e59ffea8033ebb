"""Lightning DDP on this machine's CPU (2 processes, gloo): the same global batches and the same
losses as one process, within float tolerance; rank 0 alone writes files. Run alone: pytest -m ddp.

Not bitwise: under DDP each process takes the mean loss of its half of the batch and the gradients
are averaged across processes, a different order of float32 additions from one process's mean
over the whole batch (measured: at most 2e-7 relative over these runs)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_pl.cli import main

pytestmark = pytest.mark.ddp
ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "sine": ["--trainer.max_steps=12"],
    "shakespeare": ["--trainer.max_steps=12", "--trainer.max_epochs=-1", "--trainer.limit_train_batches=5",
                    "--trainer.limit_val_batches=2", "--trainer.log_every_n_steps=1", "--data.init_args.batch_size=32",
                    "--data.init_args.seq_len=10", "--model.init_args.net.hidden_size=16",
                    "--model.init_args.net.embedding_size=16"],
}


def arguments(task: str, save_dir: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(ROOT / "configs" / f"{task}.yaml"), *SMALL[task],
            f"--trainer.logger.init_args.save_dir={save_dir}", "--trainer.accelerator=cpu", *extra]


def fit_in_two_processes(task: str, save_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m lstm_pl fit`` as a user starts DDP: Lightning starts the second process itself."""
    command = [sys.executable, "-m", "lstm_pl", *arguments(task, save_dir, "--trainer.strategy=ddp",
                                                           "--trainer.devices=2", *extra)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def losses(run: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(run))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


@pytest.mark.parametrize("task, tags", [("sine", ["train/loss", "train/loss_after_update"]),
                                        ("shakespeare", ["train/loss", "train/perplexity"])])
def test_two_processes_train_like_one(task, tags, tmp_path, request):
    """Every logged training value is the global one (the mean over the processes), as one process
    logs it, to float rounding: the loss, the after-update curve the figure draws, the perplexity."""
    text = request.getfixturevalue("corpus_args") if task == "shakespeare" else []
    main(arguments(task, tmp_path / "one", *text))  # one process: this one
    two = fit_in_two_processes(task, tmp_path / "two", *text)
    assert two.returncode == 0, two.stderr[-3000:]
    for tag in tags:
        single, double = losses(tmp_path / "one" / task / "version_0", tag), losses(tmp_path / "two" / task / "version_0", tag)
        assert len(single) == len(double) == 12, tag
        assert max(abs(a - b) / abs(a) for a, b in zip(single, double)) < 1e-5, tag
    assert [p.name for p in (tmp_path / "two" / task).iterdir()] == ["version_0"]  # one run folder, rank 0's
    files = sorted(p.name for p in (tmp_path / "two" / task / "version_0").iterdir() if p.is_file())
    assert "loss_curves.png" in files and not any(name.endswith(".partial") for name in files)
    if task == "shakespeare":
        assert "tokenizer.json" in files


def test_the_global_batch_must_divide_among_processes():
    from lstm_pl import ConfigError
    from lstm_pl.loading import share

    assert share(10, 2) == 5
    with pytest.raises(ConfigError, match=r"data.init_args.batch_size \(10\) is the global batch"):
        share(10, 3)
