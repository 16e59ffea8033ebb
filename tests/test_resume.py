"""Trust: a stopped run resumes as if nothing happened, last.ckpt is the last state, signals and a
non-finite loss stop a run with a resumable checkpoint and one line, and runtime failures are one
line naming the file or key, exit 2, nothing half-written. Run alone with ``pytest -m resume``."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_pl.checkpoints import AtomicCheckpointIO
from lstm_pl.cli import main

pytestmark = pytest.mark.resume
ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "sine": [],
    "adding": ["--data.init_args.t=20", "--data.init_args.n_sequence=300"],
    "shakespeare": ["--trainer.limit_train_batches=6", "--trainer.limit_val_batches=2", "--data.init_args.seq_len=10",
                    "--model.init_args.net.hidden_size=16", "--model.init_args.net.embedding_size=16",
                    "--trainer.max_epochs=-1", "--trainer.log_every_n_steps=1"],
}


def fit(task: str, save_dir: Path, *overrides: str) -> None:
    main(["fit", "--config", str(ROOT / "configs" / f"{task}.yaml"), f"--trainer.logger.init_args.save_dir={save_dir}",
          *SMALL[task], *overrides])


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    """The scalars of ``tag`` in the order they were written (by wall time: event files are read in
    name order, and two runs of one process in one second can sort ...pid.10 before ...pid.9)."""
    events = EventAccumulator(str(run))
    events.Reload()
    return [(event.step, event.value) for event in sorted(events.Scalars(tag), key=lambda e: (e.wall_time, e.step))]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


@pytest.mark.parametrize("task, stop, total", [("sine", 13, 30), ("adding", 10, 30), ("shakespeare", 9, 16)])
def test_a_resumed_run_is_the_uninterrupted_run(task, stop, total, tmp_path, request):
    """Stopped at ``stop`` (mid-epoch for the language model: 6 windows an epoch) and resumed from
    last.ckpt: the same losses at every step and the same final weights, bit for bit, in the same
    run folder and TensorBoard run, with no step logged twice."""
    text = request.getfixturevalue("corpus_args") if task == "shakespeare" else []
    fit(task, tmp_path / "whole", f"--trainer.max_steps={total}", *text)
    fit(task, tmp_path / "parts", f"--trainer.max_steps={stop}", *text)
    run = tmp_path / "parts" / task / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == stop
    fit(task, tmp_path / "parts", f"--trainer.max_steps={total}", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", *text)
    assert not (tmp_path / "parts" / task / "version_1").exists()  # the same run goes on
    whole = tmp_path / "whole" / task / "version_0"
    tag = "train/loss_step" if task == "shakespeare" else "train/loss"
    resumed = scalars(run, tag)
    assert [step for step, _ in resumed] == list(range(total)) == [step for step, _ in scalars(whole, tag)]
    assert resumed == scalars(whole, tag)
    final, expected = weights(run / "checkpoints" / "last.ckpt"), weights(whole / "checkpoints" / "last.ckpt")
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == total
    curves = next(state for name, state in last["callbacks"].items() if name.startswith("LossCurves"))
    assert [step for step, _ in curves["train"]] == list(range(1, total + 1))  # the figure covers the whole run


def test_last_checkpoint_is_the_last_step(tmp_path):
    """last.ckpt holds the final state although val/loss was best earlier; best-*.ckpt the best."""
    fit("sine", tmp_path, "--trainer.max_steps=40", "--optimizer.init_args.lr=0.05")
    folder = tmp_path / "sine" / "version_0" / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 40
    best = list(folder.glob("best-*.ckpt"))
    assert len(best) == 1


def test_sigterm_saves_draws_and_says_how_to_resume(tmp_path):
    command = [sys.executable, "-m", "lstm_pl", "fit", "--config", "configs/adding.yaml", *SMALL["adding"],
               "--trainer.max_steps=1000000", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    run = tmp_path / "adding" / "version_0"
    deadline = time.time() + 120
    while not list(run.glob("checkpoints/*.ckpt")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("lstm_pl: interrupted by SIGTERM at step ") and "resume with: python -m lstm_pl fit" in message
    step = int(message.split("at step ")[1].split(";")[0])
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == step > 0  # saved at the interruption, not at the last validation
    assert f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in message
    assert (run / "loss_curves.png").stat().st_size > 5_000 and (run / "predictions.png").exists()


def one_line(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1, lines
    return lines[0]


def test_a_non_finite_loss_stops_the_run_before_its_update(tmp_path, capsys):
    line = one_line(capsys, "fit", "--config", str(ROOT / "configs" / "sine.yaml"), "--optimizer.init_args.lr=1e30",
                    f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert "the training loss is inf at step 2" in line and "last finite one" in line and "at step 1" in line, line
    run = tmp_path / "sine" / "version_0"
    for path in run.glob("checkpoints/*.ckpt"):  # nothing written from non-finite weights
        assert all(torch.isfinite(t).all() for t in torch.load(path, weights_only=True)["state_dict"].values())
    assert not (run / "waveform.png").exists() or all(
        torch.isfinite(t).all() for t in torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"].values())


def test_skip_mode_drops_non_finite_batches_and_counts_them(tmp_path, monkeypatch):
    from lstm_pl.tasks import RegressionTask

    original = RegressionTask.batch_loss
    calls = []

    def every_fifth_nan(self, batch):
        calls.append(1)
        loss = original(self, batch)
        return loss * float("nan") if len(calls) % 5 == 0 and self.training else loss

    monkeypatch.setattr(RegressionTask, "batch_loss", every_fifth_nan)
    fit("sine", tmp_path, "--trainer.max_steps=20", "--non_finite.action=skip", "--trainer.callbacks=[]")
    run = tmp_path / "sine" / "version_0"
    skipped = scalars(run, "train/skipped_batches")
    assert skipped and skipped[-1][1] == 4
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values())


@pytest.fixture(scope="module")
def sine_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sine_run")
    fit("sine", folder, "--trainer.max_steps=3")
    return folder / "sine" / "version_0" / "checkpoints" / "last.ckpt"


def test_bad_checkpoints_are_one_line(sine_checkpoint, tmp_path, capsys, corpus_args):
    sine = str(ROOT / "configs" / "sine.yaml")
    assert "no such file" in one_line(capsys, "test", "--config", sine, f"--ckpt_path={tmp_path / 'missing.ckpt'}")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(sine_checkpoint.read_bytes()[:1000])
    assert "is not a readable checkpoint" in one_line(capsys, "test", "--config", sine, f"--ckpt_path={truncated}")
    line = one_line(capsys, "test", "--config", str(ROOT / "configs" / "shakespeare.yaml"),
                    f"--ckpt_path={sine_checkpoint}", *corpus_args)
    assert "is a lstm_pl.RegressionTask checkpoint" in line and "LanguageModelTask" in line


def test_unreadable_text_and_unwritable_folder_are_one_line(tmp_path, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(("caf\xe9 " * 2000).encode("latin-1"))
    line = one_line(capsys, "fit", "--config", str(ROOT / "configs" / "shakespeare.yaml"),
                    f"--data.init_args.path={latin1}", "--data.init_args.url=null", "--data.init_args.sha256=null")
    assert "data.init_args.path" in line and "not UTF-8" in line
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = one_line(capsys, "fit", "--config", str(ROOT / "configs" / "sine.yaml"),
                    f"--trainer.logger.init_args.save_dir={blocker / 'runs'}")
    assert line.startswith("lstm_pl: error: trainer.logger.init_args.save_dir: cannot write to")


def test_a_short_run_that_never_validates_is_fine(tmp_path):
    fit("adding", tmp_path, "--config", str(ROOT / "configs" / "adding_solve.yaml"), "--trainer.max_steps=5",
        *SMALL["adding"])
    assert torch.load(tmp_path / "adding_solve" / "version_0" / "checkpoints" / "last.ckpt",
                      weights_only=True)["global_step"] == 5


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    fit("sine", tmp_path, "--trainer.max_steps=5")
    last = tmp_path / "sine" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    save = torch.save

    def full_after_first_bytes(obj, file, *args, **kwargs):
        Path(file).write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(torch, "save", full_after_first_bytes)
    line = one_line(capsys, "fit", "--config", str(ROOT / "configs" / "sine.yaml"), "--trainer.max_steps=10",
                    f"--trainer.logger.init_args.save_dir={tmp_path}", f"--ckpt_path={last}")
    monkeypatch.setattr(torch, "save", save)
    assert "No space left on device" in line and "intact" in line, line
    assert last.read_bytes() == before and not list(last.parent.glob("*.partial"))


def test_generate_rejects_zero_words(sine_checkpoint, capsys):
    from lstm_pl.generate import main as generate

    with pytest.raises(SystemExit) as exit_:
        generate(["--run", str(sine_checkpoint), "--prompt", "to be", "--words", "0"])
    assert exit_.value.code == 2 and "--words must be at least 1" in capsys.readouterr().err


def test_a_full_disk_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "weights": torch.ones(1000)}, path)
    before = path.read_bytes()

    def full_disk(obj, file, *args, **kwargs):
        Path(file).write_bytes(b"x" * 100)  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(1000)}, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("key, value", [("name", "../../outside"), ("name", "a/b"), ("name", ".."), ("version", "../x")])
def test_the_run_folder_cannot_leave_save_dir(key, value, tmp_path, capsys):
    """A logger name or version that is a path (issue 21: ``name: ../../../outside`` wrote there):
    one line naming the key, exit 2, nothing written anywhere."""
    save_dir = tmp_path / "deep" / "runs"
    line = one_line(capsys, "fit", "--config", str(ROOT / "configs" / "sine.yaml"), "--trainer.max_steps=2",
                    f"--trainer.logger.init_args.save_dir={save_dir}", f"--trainer.logger.init_args.{key}={value}")
    assert line.startswith(f"lstm_pl: error: trainer.logger.init_args.{key}: ") and "one folder name" in line, line
    assert not any(tmp_path.rglob("*.tfevents*")) and not any(tmp_path.rglob("*.ckpt"))
