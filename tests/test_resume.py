"""Trust: a stopped run resumes as if nothing happened, last.ckpt is the last state, signals and a
non-finite loss stop a run with a resumable checkpoint and one line, and runtime failures are one
line naming the file or key, exit 2, nothing half-written. Run alone with ``pytest -m resume``."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
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
    "digits": ["--model.init_args.net.hidden_size=16", "--trainer.log_every_n_steps=1"],  # 81 batches an epoch
    "shakespeare": ["--trainer.limit_train_batches=6", "--trainer.limit_val_batches=2", "--data.init_args.seq_len=10",
                    "--model.init_args.net.hidden_size=16", "--model.init_args.net.embedding_size=16",
                    "--trainer.max_epochs=-1", "--trainer.log_every_n_steps=1"],
}
SMALL["shakespeare_best"] = SMALL["shakespeare_multi"] = SMALL["shakespeare_awd"] = SMALL["shakespeare"]
SMALL["shakespeare_cache"] = [*SMALL["shakespeare"], "--model.init_args.net.learned_cache_window=15"]


def fit(task: str, save_dir: Path, *overrides: str) -> None:
    main(["fit", "--config", str(ROOT / "configs" / f"{task}.yaml"), f"--trainer.logger.init_args.save_dir={save_dir}",
          *SMALL[task], *overrides])


def sigterm_at(patch: pytest.MonkeyPatch, step: int) -> None:
    """A SIGTERM to this process at the end of training step ``step`` (the batch's own hook)."""
    import pytorch_lightning as pl

    patch.setattr(pl.LightningModule, "on_train_batch_end", lambda module, outputs, batch, batch_idx: (
        module.trainer.global_step == step and os.kill(os.getpid(), signal.SIGTERM)))


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    """The scalars of ``tag`` in the order they were written (by wall time: event files are read in
    name order, and two runs of one process in one second can sort ...pid.10 before ...pid.9)."""
    events = EventAccumulator(str(run))
    events.Reload()
    return [(event.step, event.value) for event in sorted(events.Scalars(tag), key=lambda e: (e.wall_time, e.step))]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


# Each shipped config's family, shortened: (config, its overrides, total steps, where a max_steps run
# stops, where SIGTERM arrives, the step of a checkpoint after which the process is killed).
# Mid-epoch wherever the data has epochs: the language model's 6 windows, the digits' shuffled
# passes of 18 batches (val_size 0.8 keeps 287 training images; a pass runs to its end).
FAMILIES = {
    "sine": ("sine", [], 30, 13, 17, 20),
    "adding": ("adding", [*SMALL["adding"], "--trainer.val_check_interval=10"], 30, 13, 17, 20),
    "adding_solve": ("adding_solve", [*SMALL["adding"], "--data.init_args.val_size=0.1", "--trainer.val_check_interval=10",
                                      "--trainer.log_every_n_steps=1"],
                     30, 13, 17, 20),
    "digits": ("digits", [*SMALL["digits"], "--data.init_args.val_size=0.8"], 45, 18, 30, 36),
    "shakespeare_best": ("shakespeare_best", SMALL["shakespeare"], 16, 9, 8, 12),
    "shakespeare_multi": ("shakespeare_multi", SMALL["shakespeare"], 16, 9, 8, 12),
    # variable windows, the regularisers' masks, and weight averaging from step 6 (the stop at 9 and
    # the kill at 12 fall while the model trains on raw weights and checkpoints hold the average)
    "shakespeare_awd": ("shakespeare_awd", [*SMALL["shakespeare"],
                                            "--averaging.start_epoch=1"], 16, 9, 8, 12),
    # the learned cache's memory (15 steps: longer than a window of 10) rides in the carried state
    "shakespeare_cache": ("shakespeare_cache", SMALL["shakespeare_cache"], 16, 9, 8, 12),
}


def run_state(run: Path) -> tuple[dict, list, list, list]:
    """A finished run's final weights, its LossCurves record (every step's after-update loss), its
    optimizer's settings and its schedulers' states."""
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    curves = next(state for name, state in last["callbacks"].items() if name.startswith("LossCurves"))
    curve = list(zip(curves["train"]["steps"].tolist(), curves["train"]["values"].tolist()))
    return (last["state_dict"], curve, [state["param_groups"] for state in last["optimizer_states"]],
            last["lr_schedulers"])


def assert_same_run(run: Path, whole: Path, total: int) -> None:
    (final, curve, groups, schedulers), (expected, expected_curve, expected_groups, expected_schedulers) = (
        run_state(run), run_state(whole))
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)
    assert [step for step, _ in curve] == list(range(1, total + 1))  # the figure covers the whole run
    assert curve == expected_curve
    assert groups == expected_groups and schedulers == expected_schedulers


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_resumed_run_is_the_uninterrupted_run(family, tmp_path, request, monkeypatch):
    """Each family stopped three ways and resumed from the checkpoint it left: a ``max_steps`` run
    continued, SIGTERM mid-run (the checkpoint saved at the interruption) and a kill right after a
    checkpoint (the run folder as that instant left it). Every time the same after-update loss at
    every step and the same final weights, bit for bit; in the same run folder and TensorBoard run,
    with no step logged twice, where the process could save at the end."""
    from lstm_pl.checkpoints import Checkpoints

    config, extra, total, stop, term, kill = FAMILIES[family]
    extra = [*extra, *(request.getfixturevalue("corpus_args") if config.startswith("shakespeare") else []),
             "--checkpoint.last_every_seconds=0"]  # last.ckpt after every validation: the kill lands right after one
    task = lambda name, *more: main(["fit", "--config", str(ROOT / "configs" / f"{config}.yaml"),
                                     f"--trainer.logger.init_args.save_dir={tmp_path / name}", *extra, *more])
    folder = lambda name: tmp_path / name / config / "version_0"
    resume = lambda name: task(name, f"--trainer.max_steps={total}", f"--ckpt_path={folder(name) / 'checkpoints' / 'last.ckpt'}")

    save_last = Checkpoints._save_last_now

    def save_and_snapshot(self, trainer, forced=True):  # what a SIGKILL right after this checkpoint leaves on disk
        save_last(self, trainer, forced)
        if self.last_written_step == kill == trainer.global_step and not (tmp_path / "killed").exists():
            shutil.copytree(tmp_path / "whole", tmp_path / "killed")

    with monkeypatch.context() as patch:
        patch.setattr(Checkpoints, "_save_last_now", save_and_snapshot)
        task("whole", f"--trainer.max_steps={total}")
    whole = folder("whole")
    assert torch.load(folder("killed") / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == kill

    task("parts", f"--trainer.max_steps={stop}")
    assert torch.load(folder("parts") / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == stop
    resume("parts")
    assert not (tmp_path / "parts" / config / "version_1").exists()  # the same run goes on
    tag = "train/loss"
    resumed = scalars(folder("parts"), tag)
    assert [step for step, _ in resumed] == list(range(total)) == [step for step, _ in scalars(whole, tag)]
    assert resumed == scalars(whole, tag)
    assert_same_run(folder("parts"), whole, total)

    with monkeypatch.context() as patch:
        sigterm_at(patch, term)
        with pytest.raises(SystemExit) as interrupted:
            task("terminated", f"--trainer.max_steps={total}")
    assert interrupted.value.code == 143
    assert torch.load(folder("terminated") / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == term
    resume("terminated")
    assert scalars(folder("terminated"), tag) == scalars(whole, tag)
    assert_same_run(folder("terminated"), whole, total)

    resume("killed")
    assert_same_run(folder("killed"), whole, total)


def test_a_resumed_run_clears_what_a_killed_write_left(sine_checkpoint, tmp_path):
    """A checkpoint write killed half-way leaves its temporary file; the resumed run removes it."""
    import shutil

    run = tmp_path / "sine" / "version_0"
    shutil.copytree(sine_checkpoint.parent.parent, run)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = run / "checkpoints" / f".best-3.ckpt.{int(dead.stdout)}.k2j4h6.partial"
    stale.write_bytes(b"")
    fit("sine", tmp_path, "--trainer.max_steps=5", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert not stale.exists() and not list(run.rglob("*.partial"))


def test_last_checkpoint_is_the_last_step(tmp_path):
    """last.ckpt holds the final state although val/loss was best earlier; best-*.ckpt the best."""
    fit("sine", tmp_path, "--trainer.max_steps=40", "--optimizer.init_args.lr=0.05")
    folder = tmp_path / "sine" / "version_0" / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 40
    best = list(folder.glob("best-*.ckpt"))
    assert len(best) == 1


def test_last_checkpoint_is_written_at_most_every_last_every_seconds(tmp_path, monkeypatch):
    """Sine validates every step: last.ckpt is rewritten after each validation only with
    ``last_every_seconds: 0``; with an hour, at the first validation and at the end. The best
    checkpoints are the same files either way, bit for bit: written at the validation that found
    each with 0; with an hour, taken then and written just before the next last.ckpt, so every
    last.ckpt names a best checkpoint that is on disk, and the replaced ones are gone."""
    written: list[tuple[str, int, bool]] = []
    save = AtomicCheckpointIO.save_checkpoint

    def record(self, checkpoint, path, storage_options=None):
        best_paths = [state["best_model_path"] for state in checkpoint["callbacks"].values() if "best_model_path" in state]
        written.append((Path(path).name, checkpoint["global_step"], all(Path(p).is_file() for p in best_paths)))
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", record)
    runs = {}
    for every_seconds in (0, 3600):
        written.clear()
        fit("sine", tmp_path / str(every_seconds), "--trainer.max_steps=30", f"--checkpoint.last_every_seconds={every_seconds}")
        folder = tmp_path / str(every_seconds) / "sine" / "version_0" / "checkpoints"
        runs[every_seconds] = (list(written), folder)
        assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 30
        assert all(ok for name, _, ok in written if name == "last.ckpt")
        assert all(name == f"best-{step}.ckpt" for name, step, _ in written if name != "last.ckpt")
    now, held = runs[0][0], runs[3600][0]
    assert [step for name, step, _ in now if name == "last.ckpt"] == list(range(1, 31))
    assert [step for name, step, _ in held if name == "last.ckpt"] == [1, 30]
    assert [name for name, _, _ in held] == ["best-1.ckpt", "last.ckpt", f"best-{held[2][1]}.ckpt", "last.ckpt"]
    best_now = [step for name, step, _ in now if name != "last.ckpt"]
    assert len(best_now) > 2 and best_now[-1] == held[2][1]  # the same best step; the ones between never written
    files = [sorted(path.name for path in folder.glob("best-*.ckpt")) for _, folder in runs.values()]
    assert files[0] == files[1] == [f"best-{best_now[-1]}.ckpt"]
    checkpoints = [torch.load(folder / files[0][0], weights_only=True) for _, folder in runs.values()]
    assert checkpoints[0]["global_step"] == checkpoints[1]["global_step"] == best_now[-1]
    for key, value in checkpoints[0]["state_dict"].items():
        assert torch.equal(value, checkpoints[1]["state_dict"][key]), key
    for state in checkpoints[0]["optimizer_states"][0]["state"].values():
        assert state  # the optimizer's state was saved too (compared in full by the resume tests)


def test_held_best_checkpoint_is_written_when_the_run_is_interrupted(tmp_path, monkeypatch):
    """A SIGTERM between two writes of last.ckpt: the best checkpoint taken since the last write is
    written with the one saved at the interruption, and that one names it."""
    stop = 12
    sigterm_at(monkeypatch, stop)
    with pytest.raises(SystemExit):
        fit("sine", tmp_path, "--trainer.max_steps=30", "--checkpoint.last_every_seconds=3600")
    run = tmp_path / "sine" / "version_0"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == stop
    val = scalars(run, "val/loss")
    assert len(val) == stop
    best_step = min(val, key=lambda point: point[1])[0] + 1  # logged at the index of the batch before it
    best = [state["best_model_path"] for state in last["callbacks"].values() if "best_model_path" in state][0]
    assert Path(best).name == f"best-{best_step}.ckpt" and Path(best).is_file()
    assert sorted(path.name for path in (run / "checkpoints").glob("best-*.ckpt")) == [f"best-{best_step}.ckpt"]


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
    assert message.startswith("lstm_pl: interrupted by SIGTERM at step ") and "resume with: .venv/bin/python -m lstm_pl fit" in message  # as the README spells it
    step = int(message.split("at step ")[1].split(";")[0])
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == step > 0  # saved at the interruption, not at the last validation
    assert f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in message
    assert (run / "loss_curves.png").stat().st_size > 5_000 and (run / "predictions.png").exists()


def test_a_sigterm_before_training_starts_stops_the_run(tmp_path, monkeypatch, capsys):
    """A SIGTERM in the window before Lightning's own handler is in place (the CLI parsing, building
    the run) stops the run there, exit 143; it was noted, then ignored, and the run trained to its end
    and exited 0."""
    import lstm_pl.cli

    monkeypatch.setattr(lstm_pl.cli.fused, "lstm_setting", lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(SystemExit) as stopped:
        fit("sine", tmp_path, "--trainer.max_steps=30")
    assert stopped.value.code == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "lstm_pl: interrupted by SIGTERM at step ?; no checkpoint was written; start it again")
    assert not (tmp_path / "sine").exists()


def test_a_sigterm_resume_logs_every_validation_at_its_step(tmp_path, monkeypatch):
    """A SIGTERM at a validated step, with ``last.ckpt`` not due at that validation (every 10 s by
    default): the resumed run's ``val/loss`` points are the uninterrupted run's, step for step. (Saved
    after the step's end, the checkpoint made Lightning count the logging step again on resuming,
    and every later validation was logged one step late.)"""
    fit("sine", tmp_path / "whole", "--trainer.max_steps=30")
    stop = 17
    with monkeypatch.context() as patch:
        sigterm_at(patch, stop)
        with pytest.raises(SystemExit):
            fit("sine", tmp_path / "parts", "--trainer.max_steps=30", "--checkpoint.last_every_seconds=3600")
    run = tmp_path / "parts" / "sine" / "version_0"
    fit("sine", tmp_path / "parts", "--trainer.max_steps=30", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert scalars(run, "val/loss") == scalars(tmp_path / "whole" / "sine" / "version_0", "val/loss")


def test_a_resumed_run_counts_its_own_steps_and_only_fit_offers_a_resume(tmp_path, capsys):
    """The summary of a resumed fit counts the steps this process ran (it counted the whole run: the
    steps were read before Lightning restored them); an interrupted test, validate or predict has
    nothing to resume, and no command is offered for a checkpoint that is not on disk."""
    from lstm_pl.cli import resume_command

    fit("sine", tmp_path, "--trainer.max_steps=5")
    last = tmp_path / "sine" / "version_0" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    fit("sine", tmp_path, "--trainer.max_steps=8", f"--ckpt_path={last}")
    assert "fit done: 8 steps (3 this run)" in capsys.readouterr().out
    assert resume_command(None, ["test", "--config", "sine.yaml", f"--ckpt_path={last}"]) == "run it again"
    assert resume_command(None, ["fit", "--config", "sine.yaml"]) == "no checkpoint was written; start it again"


def test_a_sigint_during_a_sigterm_stop_does_not_break_its_save(tmp_path, monkeypatch):
    """Once a stop is under way, a second signal (a Ctrl-C while the SIGTERM's save runs) is noted, not
    raised into the save: the run stops as the SIGTERM asked, last.ckpt at its step (the save was
    abandoned, last.ckpt left at an earlier step)."""
    from lstm_pl.checkpoints import Checkpoints

    stop, write_last = 7, Checkpoints._write_last

    def interrupted_write(self, trainer, candidates):
        if trainer.global_step == stop:
            os.kill(os.getpid(), signal.SIGINT)
        write_last(self, trainer, candidates)
    monkeypatch.setattr(Checkpoints, "_write_last", interrupted_write)
    sigterm_at(monkeypatch, stop)
    with pytest.raises(SystemExit) as stopped:
        fit("sine", tmp_path, "--trainer.max_steps=30", "--checkpoint.last_every_seconds=3600")
    assert stopped.value.code == 143
    last = torch.load(tmp_path / "sine" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == stop


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


def test_skip_mode_drops_non_finite_batches_and_counts_them(tmp_path, monkeypatch, capsys):
    from lstm_pl.tasks import RegressionTask

    original = RegressionTask.batch_loss
    calls = []

    def every_fifth_nan(self, batch):
        calls.append(1)
        loss = original(self, batch)
        return loss * float("nan") if len(calls) % 5 == 0 and self.training else loss

    monkeypatch.setattr(RegressionTask, "batch_loss", every_fifth_nan)
    fit("sine", tmp_path, "--trainer.max_steps=20", "--non_finite.action=skip", "--trainer.callbacks=[]")
    assert "lstm_pl: skipped 4 of 20 steps for a non-finite loss" in capsys.readouterr().err  # said at the end
    run = tmp_path / "sine" / "version_0"
    skipped = scalars(run, "train/skipped_batches")
    assert skipped and skipped[-1][1] == 4
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values())


@pytest.mark.parametrize("overrides, named", [
    (["--optimizer.init_args.lr=1e30"], "non_finite.max_skipped_share: 29 of 30 steps had a non-finite loss"),
    (["--optimizer.init_args.lr=1e30", "--non_finite.max_skipped_in_a_row=5"],
     "non_finite.max_skipped_in_a_row: the last 5 steps (to step 6) all had a non-finite loss"),
])
def test_a_run_that_skips_most_steps_fails(overrides, named, tmp_path, capsys):
    """Skipping is for the odd bad batch: a run that skipped more than half its steps, or too many
    in a row, is one line and exit 2, not a finished run; its last finite checkpoint is kept."""
    line = one_line(capsys, "fit", "--config", str(ROOT / "configs" / "sine.yaml"), "--trainer.max_steps=30",
                    "--non_finite.action=skip", f"--trainer.logger.init_args.save_dir={tmp_path}", *overrides)
    assert named in line, line
    state = torch.load(tmp_path / "sine" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
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
    flipped = tmp_path / "flipped.ckpt"  # four bytes changed inside the weights: torch.load takes it as it is
    data = bytearray(sine_checkpoint.read_bytes())
    with zipfile.ZipFile(sine_checkpoint) as archive:
        weights = max(archive.infolist(), key=lambda entry: entry.file_size)
    middle = weights.header_offset + 30 + len(weights.filename.encode()) + len(weights.extra) + weights.file_size // 2
    data[middle:middle + 4] = bytes(255 - b for b in data[middle:middle + 4])
    flipped.write_bytes(bytes(data))
    for command in ("test", "fit"):
        line = one_line(capsys, command, "--config", sine, f"--ckpt_path={flipped}")
        assert f"{flipped} is damaged" in line and "CRC-32" in line
    line = one_line(capsys, "test", "--config", str(ROOT / "configs" / "shakespeare.yaml"),
                    f"--ckpt_path={sine_checkpoint}", *corpus_args)
    assert "is a lstm_pl.RegressionTask checkpoint" in line and "LanguageModelTask" in line


def folder_state(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("config, overrides, named", [
    ("sine", ["--model.init_args.net.hidden_size=20"], "model.init_args.net.hidden_size is 20 here, 50 in the checkpoint"),
    ("sine", ["--model.init_args.net.cell=rnn", "--model.init_args.net.num_layers=2"],
     "model.init_args.net.cell is 'rnn' here, 'lstm' in the checkpoint; model.init_args.net.num_layers is 2 here"),
    ("adding", [], "was trained on SineDataModule; this config's data is AddingDataModule"),
])
def test_a_checkpoint_resumes_only_the_run_it_was_trained_as(config, overrides, named, sine_checkpoint, capsys):
    """Another network or another task: one line naming each difference, and the checkpoint's run
    folder left exactly as it was (no config.yaml rewritten, no figure or event file added)."""
    run = sine_checkpoint.parent.parent
    before = folder_state(run)
    line = one_line(capsys, "fit", "--config", str(ROOT / "configs" / f"{config}.yaml"), *overrides,
                    f"--ckpt_path={sine_checkpoint}")
    assert line.startswith(f"lstm_pl: error: ckpt_path: {sine_checkpoint}") and named in line, line
    assert folder_state(run) == before


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
        *SMALL["adding"], "--data.init_args.val_size=0.1")
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


def test_lightning_still_has_the_private_names_we_use():
    """lstm_pl.checkpoints uses a few of Lightning's private names (``LIGHTNING_PRIVATE``, read from
    pytorch-lightning 2.6.6): a Lightning that moves one fails here, not in a resumed run."""
    import importlib

    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lstm_pl.checkpoints import LIGHTNING_PRIVATE

    for class_path, names in LIGHTNING_PRIVATE.items():
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        owner = ModelCheckpoint() if cls is ModelCheckpoint else cls  # instance attributes are set in __init__
        if cls is pl.Trainer:
            owner = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        missing = [attribute for attribute in names if not hasattr(owner, attribute)]
        assert not missing, f"{class_path} no longer has {missing}: lstm_pl/checkpoints.py needs a new way"


def test_snapshot_copies_every_tensor_and_keeps_a_state_dicts_metadata():
    """A held best checkpoint must not change when training goes on: every tensor is copied."""
    from lstm_pl.checkpoints import snapshot

    net = torch.nn.Linear(2, 1)
    dump = {"state_dict": net.state_dict(), "loops": [{"step": torch.tensor(3)}, ("a", torch.ones(1))], "epoch": 1}
    copied = snapshot(dump)
    with torch.no_grad():
        net.weight.add_(1.0)
        dump["loops"][0]["step"].add_(1)
    assert not torch.equal(copied["state_dict"]["weight"], net.weight)
    assert copied["loops"][0]["step"] == 3 and isinstance(copied["loops"][1], tuple) and copied["epoch"] == 1
    assert copied["state_dict"]._metadata == dump["state_dict"]._metadata


def test_monitor_candidates_are_lightnings():
    """``Checkpoints._monitor_candidates`` copies tensor by tensor what Lightning deep-copies: the same values."""
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import ModelCheckpoint

    from lstm_pl.checkpoints import Checkpoints

    metrics = {"val/loss": torch.tensor(0.5), "step": torch.tensor(7.0), "note": 2.0}
    trainer = SimpleNamespace(callback_metrics=metrics, current_epoch=3, global_step=8)
    ours, theirs = Checkpoints()._monitor_candidates(trainer), ModelCheckpoint()._monitor_candidates(trainer)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(torch.as_tensor(ours[key]), torch.as_tensor(theirs[key])) and type(ours[key]) is type(theirs[key])
    assert ours["val/loss"] is not metrics["val/loss"]


def test_loss_curves_state_is_packed_incrementally_to_the_same_tensors():
    from lstm_pl.callbacks import LossCurves

    curves = LossCurves()
    curves.train = [(step, torch.tensor(float(step))) for step in range(1, 4)]
    first = curves.state_dict()
    curves.train += [(4, torch.tensor(4.0))]
    curves.val = [(2, torch.tensor(0.5, dtype=torch.float64))]
    second = curves.state_dict()
    assert torch.equal(first["train"]["steps"], torch.tensor([1, 2, 3]))
    assert torch.equal(second["train"]["steps"], torch.tensor([1, 2, 3, 4]))
    assert torch.equal(second["train"]["values"], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert second["val"]["values"].dtype == torch.float32 and second["val"]["steps"].tolist() == [2]
    fresh = LossCurves()
    fresh.load_state_dict(second)
    assert all(torch.equal(fresh.state_dict()[c][k], second[c][k]) for c in ("train", "val") for k in ("steps", "values"))


def test_held_best_checkpoints_keep_every_file_a_last_checkpoint_names(tmp_path, monkeypatch):
    """Three ways a held best could break the promise that ``last.ckpt`` names files on disk: a
    filename without the step (Lightning's version counter must see held names as taken), a run
    ending with non-finite weights (no new ``last.ckpt``: the replaced files must stay), a failed
    write of ``last.ckpt`` (the replaced files must stay)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lstm_pl.checkpoints import Checkpoints

    class Scored(pl.LightningModule):
        def __init__(self, poison_at=None):
            super().__init__()
            self.layer, self.poison_at = torch.nn.Linear(2, 1), poison_at

        def training_step(self, batch, batch_idx):
            if self.global_step + 1 == self.poison_at:
                with torch.no_grad():
                    self.layer.weight.fill_(float("nan"))
            return self.layer(batch[0]).square().mean()

        def validation_step(self, batch, batch_idx):
            self.log("val/loss", torch.tensor(1.0 / (self.global_step + 1)))  # a new best every step

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    def run(folder, steps, module, **settings):
        callback = Checkpoints(dirpath=str(folder), monitor="val/loss", save_last=True, last_every_seconds=3600,
                               auto_insert_metric_name=False, save_on_train_epoch_end=False,
                               **{"filename": "best-{step}", **settings})
        trainer = pl.Trainer(max_steps=steps, val_check_interval=1, limit_val_batches=1, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             callbacks=[callback], plugins=[AtomicCheckpointIO()])
        data = lambda n: DataLoader(TensorDataset(torch.randn(n, 2)), batch_size=1)
        try:
            trainer.fit(module, data(40), data(2))
        except OSError:
            pass

    def named(folder):
        state = [s for s in torch.load(folder / "last.ckpt", weights_only=True)["callbacks"].values()
                 if "best_model_path" in s][0]
        paths = {state["best_model_path"], state["kth_best_model_path"], *state["best_k_models"]} - {""}
        return {Path(p).name for p in paths}, {Path(p).name for p in paths if not Path(p).is_file()}

    run(tmp_path / "names", 4, Scored(), save_top_k=-1, filename="best")
    assert named(tmp_path / "names") == ({"best.ckpt", "best-v1.ckpt", "best-v2.ckpt", "best-v3.ckpt"}, set())

    run(tmp_path / "nonfinite", 6, Scored(poison_at=6))
    assert named(tmp_path / "nonfinite") == ({"best-1.ckpt"}, set())

    save = AtomicCheckpointIO.save_checkpoint

    def full_disk(self, checkpoint, path, storage_options=None):
        if Path(path).name == "last.ckpt" and checkpoint["global_step"] > 1:
            raise OSError(28, "No space left on device", str(path))
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", full_disk)
    run(tmp_path / "full", 5, Scored())
    assert named(tmp_path / "full") == ({"best-1.ckpt"}, set())
