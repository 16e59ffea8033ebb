"""The command line: a short fit trains and leaves its artefacts; bad configs stop in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_pl import LossCurves, data, loading
from lstm_pl.cli import CLI, main

ROOT = Path(__file__).resolve().parents[1]


def fit(config, tmp_path, *overrides):
    args = ["fit", "--config", config, f"--trainer.logger.init_args.save_dir={tmp_path}", *overrides]
    return CLI(args=args)


def test_sine_fit_lowers_loss_and_leaves_artifacts(config_path, tmp_path):
    cli = fit(config_path("sine"), tmp_path, "--trainer.max_steps=80", "--model.init_args.net.hidden_size=20")
    curves = next(c for c in cli.trainer.callbacks if isinstance(c, LossCurves))
    first = [float(loss) for _, loss in curves.train[:5]]
    last = [float(loss) for _, loss in curves.train[-5:]]
    assert len(curves.train) == 80 and len(curves.val) == 80
    assert sum(last) < 0.2 * sum(first)
    run = Path(cli.trainer.log_dir)
    assert run.parent == tmp_path / "sine"
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").exists() and list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / "loss_curves.png").stat().st_size > 10_000 and (run / "waveform.png").stat().st_size > 10_000
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["init_args"]["net"]["hidden_size"] == 20 and config["trainer"]["max_steps"] == 80
    events = EventAccumulator(str(run))
    events.Reload()
    assert {"train/loss", "val/loss", "val/closed_loop_mse"} <= set(events.Tags()["scalars"])
    assert {"train/loss_curves", "val/waveform"} <= set(events.Tags()["images"])
    assert events.Tags()["graph"] and any("lstm" in node.op for node in events.Graph().node)  # log_graph
    assert "hidden_size" in (run / "hparams.yaml").read_text()


def test_validate_test_predict_from_checkpoint(config_path, tmp_path, capsys):
    """Each writes into the run its checkpoint belongs to (<run>/<subcommand>/version_0), says where,
    and leaves the task's folder holding that one run: the next fit's version number is unchanged."""
    cli = fit(config_path("sine_rnn"), tmp_path, "--trainer.max_steps=2")
    run = Path(cli.trainer.log_dir)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    for command in ("validate", "test", "predict"):
        capsys.readouterr()
        done = CLI(args=[command, "--config", config_path("sine_rnn"), f"--ckpt_path={ckpt}",
                         f"--trainer.logger.init_args.save_dir={tmp_path}"])
        assert done.trainer.state.finished and done.trainer.state.fn == command
        assert Path(done.trainer.log_dir) == run / command / "version_0"
        out = capsys.readouterr().out
        assert f"{command} done" in out and str(run / command / "version_0") in out, out
        assert f"checkpoint: {ckpt}" in out, out  # whose weights were evaluated
    assert sorted(p.name for p in (tmp_path / "sine_rnn").iterdir()) == ["version_0"]
    events = EventAccumulator(str(run / "test" / "version_0"))
    events.Reload()
    assert {"test/loss"} <= set(events.Tags()["scalars"])


def test_print_config_composes_a_variant_onto_its_base(config_path, capsys):
    """A variant config says only what differs; --print_config shows the whole composed run."""
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", config_path("sine_rnn"), "--print_config"])
    assert exit_.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "lstm_pl.RegressionTask"
    assert config["model"]["init_args"]["net"]["cell"] == "rnn" and config["model"]["init_args"]["net"]["hidden_size"] == 50
    logger = config["trainer"]["logger"]["init_args"]
    assert (logger["name"], logger["save_dir"]) == ("sine_rnn", "runs")
    assert config["checkpoint"]["monitor"] == "val/loss" and config["optimizer"]["init_args"]["lr"] == 0.001


def one_error_line(capsys, *args) -> str:
    """Run the CLI in-process with ``args``; it must exit 2 with exactly one line on stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("override, key", [
    ("--model.init_args.net.cell=gru", "model.init_args.net.cell"),
    ("--model.init_args.net.hidden_size=0", "model.init_args.net.hidden_size"),
    ("--model.init_args.net.num_layers=-1", "model.init_args.net.num_layers"),
    ("--data.init_args.window=251", "data.init_args.window"),
    ("--data.init_args.batch_size=0", "data.init_args.batch_size"),
    ("--model.init_args.net.hiden_size=3", "hiden_size"),
    ("--model.init_args.net.chrono_t_max=100", "model.init_args.net.chrono_t_max"),
    ("--trainer.val_check_interval=0", "trainer.val_check_interval"),  # was a ZeroDivisionError after step 1
    ("--data.init_args.period=0", "data.init_args.period"),  # was a NaN training loss, blamed on the learning rate
])
def test_bad_input_stops_with_one_line(config_path, tmp_path, capsys, override, key):
    line = one_error_line(capsys, "fit", "--config", config_path("sine_rnn"), override,
                          f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert "error:" in line and key in line, line
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("override, says", [
    ("--optimizer.init_args.lr=.nan", "optimizer.init_args.lr: nan is not a finite number"),
    ("--optimizer.init_args.lr=-1", "optimizer.init_args: TFAdam: lr must be positive"),
    ("--model.init_args.net.hidden_size=3000000", "out of memory ("),
    ("--model.init_args.net.hidden_size=100000000000000000000", "a size too large to allocate"),
    ("--trainer.accelerator=gpu" if not torch.cuda.is_available() else "--trainer.accelerator=tpu", "trainer: "),
])
def test_what_the_machine_or_an_optimizer_refuses_is_one_line(config_path, tmp_path, capsys, override, says):
    """Settings that only fail once classes are made (an optimizer's own checks, memory, a missing
    accelerator): one line, exit 2, no traceback, nothing trained."""
    line = one_error_line(capsys, "fit", "--config", config_path("sine"), override, "--trainer.max_steps=2",
                          f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert line.startswith(f"lstm_pl: error: {says}"), line
    assert not list(tmp_path.rglob("*.ckpt"))


def test_an_unknown_lstm_kernel_setting_is_one_line_before_anything_is_written(config_path, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setenv("LSTM_PL_LSTM", "mkl")
    line = one_error_line(capsys, "fit", "--config", config_path("sine"), f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert line == "lstm_pl: error: LSTM_PL_LSTM='mkl': choose one of auto, onednn, fused", line
    assert not list(tmp_path.iterdir())


def test_a_batch_larger_than_memory_is_refused_before_it_is_drawn(config_path, tmp_path, capsys, monkeypatch):
    """Drawn with replacement, a batch can be far larger than the data: one whose rows alone exceed
    the free memory is one line naming the key, at once and before the run writes anything (in the
    run folder or the working directory), not an allocation that runs for minutes or ends in the
    kernel's out-of-memory kill."""
    monkeypatch.chdir(tmp_path)
    free = data.memory_available()
    if free is None:
        pytest.skip("no /proc/meminfo: the check needs Linux's MemAvailable")
    row_bytes = 250 * 2 * 4 + 4  # an adding sequence (T=250, signal and mask) and its target, float32
    batch = 2 * free // row_bytes
    line = one_error_line(capsys, "fit", "--config", config_path("adding"), f"--data.init_args.batch_size={batch}",
                          f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert line.startswith(f"lstm_pl: error: data.init_args.batch_size ({batch}): one batch's rows need "), line
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]


def test_batches_are_fetched_whole_and_equal_row_by_row():
    """``Rows`` hands the DataLoader a batch in one indexing: the same values, order and types as
    the row-at-a-time batch of a plain TensorDataset."""
    x, y = torch.randn(50, 7, 2), torch.randint(0, 3, (50,))
    order = [3, 3, 49, 0, 17, 8, 8, 1]
    batched = loading.loader(loading.Rows(x, y), batch_size=4, sampler=order)
    plain = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4, sampler=order)
    for (bx, by), (px, py) in zip(batched, plain, strict=True):
        assert torch.equal(bx, px) and torch.equal(by, py) and by.dtype == py.dtype


def test_config_files_as_users_write_them(config_path, tmp_path, capsys):
    """A binary file given as a config, and a variant config with a nested model: mapping (which
    jsonargparse does not merge): one line each, the second saying to write dotted keys."""
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    assert one_error_line(capsys, "fit", "--config", str(binary)) == (
        f"lstm_pl: error: --config: cannot read {binary} (not UTF-8 text); give a YAML config file")
    for text, says in [("- 1\n- 2\n", "is a list, not a mapping"), ("sine\n", "is a str, not a mapping"), ("", "is empty"),
                       ("trainer: {max_steps: 3\n", "is not valid YAML at line 2")]:  # jsonargparse named no file
        config = tmp_path / "config.yaml"
        config.write_text(text)
        line = one_error_line(capsys, "fit", "--config", str(config))
        assert line.startswith(f"lstm_pl: error: --config: {config} {says}"), line
    nested = ROOT / "configs" / f".nested-{os.getpid()}.yaml"  # beside sine.yaml, which it starts from
    nested.write_text("config: sine.yaml\nmodel: {init_args: {net: {hidden_size: 30}}}\n")
    try:
        line = one_error_line(capsys, "fit", "--config", str(nested), f"--trainer.logger.init_args.save_dir={tmp_path}")
    finally:
        nested.unlink()
    assert "write each setting as one dotted key, e.g. model.init_args.net.hidden_size: 30" in line, line


def test_a_file_where_the_run_folder_goes_is_one_line(config_path, tmp_path, capsys):
    """A file named like the run's folder (``<save_dir>/sine``): one line naming it, exit 2 (it was
    a FileExistsError traceback)."""
    (tmp_path / "sine").write_text("not a folder")
    line = one_error_line(capsys, "fit", "--config", config_path("sine"), "--trainer.max_steps=2",
                          f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert line.startswith("lstm_pl: error: cannot write") and str(tmp_path / "sine") in line, line


def test_a_directory_where_a_resumed_runs_config_goes_is_one_line(config_path, tmp_path, capsys):
    """A resumed run whose folder holds a directory named ``config.yaml``: one line naming it, exit
    2 (it was jsonargparse's "File is not creatable" traceback); the checkpoint is left as it was."""
    main(["fit", "--config", config_path("sine"), "--trainer.max_steps=2", f"--trainer.logger.init_args.save_dir={tmp_path}"])
    run = tmp_path / "sine" / "version_0"
    (run / "config.yaml").unlink()
    (run / "config.yaml").mkdir()
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    line = one_error_line(capsys, "fit", "--config", config_path("sine"), "--trainer.max_steps=4",
                          f"--trainer.logger.init_args.save_dir={tmp_path}", f"--ckpt_path={last}")
    assert line.startswith("lstm_pl: error: cannot write") and str(run / "config.yaml") in line, line
    assert last.read_bytes() == before


def test_evaluating_a_checkpoint_says_which_settings_it_does_not_use(config_path, tmp_path, caplog):
    """``test --ckpt_path`` evaluates the network as trained: a model setting given otherwise here is
    not used, and one warning says so (it was silently replaced), naming the key and both values."""
    main(["fit", "--config", config_path("sine"), "--trainer.max_steps=2", f"--trainer.logger.init_args.save_dir={tmp_path}"])
    last = tmp_path / "sine" / "version_0" / "checkpoints" / "last.ckpt"
    said = lambda: [r.getMessage() for r in caplog.records if "evaluated with the settings it was trained with" in r.getMessage()]
    caplog.clear()
    main(["test", "--config", config_path("sine"), "--model.init_args.net.hidden_size=7", f"--ckpt_path={last}",
          f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert len(said()) == 1 and "model.init_args.net.hidden_size is 7 here, 50 in the checkpoint" in said()[0], said()
    caplog.clear()
    main(["test", "--config", config_path("sine"), f"--ckpt_path={last}", f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert said() == []  # the settings it was trained with: nothing to say


@pytest.mark.parametrize("task, length, unit", [("sine", "--trainer.max_steps", "steps"),
                                                 ("shakespeare", "--trainer.max_epochs", "epochs")])
def test_a_cosine_schedule_shorter_than_the_run_is_said(config_path, tmp_path, caplog, corpus_args, task, length, unit):
    """A cosine rate whose T_max ends before the run climbs back up: one warning naming both keys;
    none where T_max covers the run. Sine steps the scheduler every step (T_max in steps against
    max_steps), the language model every epoch (in epochs against max_epochs)."""
    small = (["--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--data.init_args.seq_len=5",
              *corpus_args] if task == "shakespeare" else [])
    said = lambda: [r.getMessage() for r in caplog.records if "cosine rate climbs back" in r.getMessage()]
    expected = f"T_max is 2 {unit}, trainer.{length.removeprefix('--trainer.')} 3"
    for t_max, warned in ((2, True), (3, False)):
        caplog.clear()
        main(["fit", "--config", config_path(task), f"{length}=3", *small, f"--trainer.logger.init_args.save_dir={tmp_path}",
              f"--lr_scheduler={{class_path: torch.optim.lr_scheduler.CosineAnnealingLR, init_args: {{T_max: {t_max}}}}}"])
        assert len(said()) == warned and all(expected in line for line in said()), said()


def test_unknown_key_in_config_file(config_path, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs" / "sine.yaml").read_text().replace("  max_steps: 500", "  max_stepz: 500"))
    assert "max_stepz" in one_error_line(capsys, "fit", "--config", str(bad))


@pytest.mark.parametrize("task", ["sine", "adding"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "lstm_peephole", "lstm_cec"])
def test_every_cell_trains_through_the_cli(config_path, tmp_path, task, cell):
    small = ["--data.init_args.t=20", "--data.init_args.n_sequence=200"] if task == "adding" else []
    cli = fit(config_path(task), tmp_path, f"--model.init_args.net.cell={cell}", "--trainer.max_steps=4",
              "--trainer.val_check_interval=2", *small)
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 4 and torch.isfinite(metrics["val/loss"])
    assert type(cli.model.net.rnn).__name__ == {"rnn": "RNN", "lstm": "LSTM"}.get(cell, "StackedLSTM")
    if task == "adding":
        assert {"val/baseline_mse", "val/within_tolerance"} <= set(metrics)
        assert (Path(cli.trainer.log_dir) / "predictions.png").exists()


def test_adding_solve_configs(config_path, tmp_path, capsys):
    """The solving budget parses, uses chrono on the LSTM, and refuses chrono on a gateless cell."""
    small = ["--trainer.max_steps=2", "--data.init_args.t=20", "--data.init_args.n_sequence=200",
             "--data.init_args.val_size=0.1"]
    cli = fit(config_path("adding_solve"), tmp_path, *small)
    assert cli.trainer.gradient_clip_val == 1.0 and cli.trainer.global_step == 2
    bias = cli.model.net.rnn.bias_ih_l0.detach().view(4, 100)
    # chrono: b_f = log U(1, T-1), b_i = -b_f (two Adam steps of 1e-3 have moved each by at most 2e-3)
    assert bias[1].min() > -0.01 and bias[1].max() < torch.log(torch.tensor(249.0)) + 0.01 and bias[1].std() > 0.5
    assert (bias[0] + bias[1]).abs().max() < 0.01
    line = one_error_line(capsys, "fit", "--config", config_path("adding_solve"), "--model.init_args.net.cell=rnn")
    assert "model.init_args.net.chrono_t_max" in line
    rnn = fit(config_path("adding_solve_rnn"), tmp_path, *small)
    assert type(rnn.model.net.rnn).__name__ == "RNN" and rnn.trainer.gradient_clip_val == 1.0


def test_loss_curve_after_update_is_the_originals(config_path, tmp_path):
    """LossCurves(after_update=True) re-evaluates each batch after its update, as the original's fit
    recorded its loss: with a learning rate of 0 that is the loss before the update, bit for bit;
    with the original's Adam it is lower on most steps (the step just fitted that very batch)."""
    frozen = fit(config_path("sine"), tmp_path, "--trainer.max_steps=20",
                 '--optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.0}}')
    trained = fit(config_path("sine"), tmp_path, "--trainer.max_steps=20")
    for cli in (frozen, trained):
        curves = next(c for c in cli.trainer.callbacks if isinstance(c, LossCurves))
        assert curves.after_update and len(curves.train) == 20
    scalars = {}
    for name, cli in (("frozen", frozen), ("trained", trained)):
        events = EventAccumulator(cli.trainer.log_dir)
        events.Reload()
        scalars[name] = [[e.value for e in events.Scalars(tag)] for tag in ("train/loss", "train/loss_after_update")]
    assert scalars["frozen"][0] == scalars["frozen"][1]
    lower = sum(after < before for before, after in zip(*scalars["trained"]))
    assert lower >= 15


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_large_tensors_reuse_freed_memory():
    """After keep_freed_memory (every entry point calls it), a 50 MB tensor allocated and freed step
    after step costs no page faults: glibc no longer maps and unmaps it each time. Measured in a
    fresh process, where no other test's threads allocate (or fragment the heap) meanwhile."""
    script = """
import resource, torch
from lstm_pl.runtime import keep_freed_memory
keep_freed_memory()
torch.ones(13_000_000).sum()  # the first allocation maps the memory once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(13_000_000).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                cwd=ROOT).stdout.split()[-1])
    # At most one allocation's pages (12,700 of 4 KB) in all; mapped and unmapped every time: 127,000.
    assert faults < 30_000, faults


def test_training_scalars_are_written_in_blocks_without_a_per_step_log(config_path, tmp_path, monkeypatch):
    """train/loss and train/loss_after_update reach TensorBoard at every log_every_n_steps-th step,
    numbered as Lightning's self.log numbers them (the batch's index), written flush_every points at
    a time and at the end, with no per-step self.log (a millisecond a step on a CPU); the summary's
    last train/loss is the last step's."""
    import pytorch_lightning as pl

    logged: list[str] = []
    log = pl.LightningModule.log
    monkeypatch.setattr(pl.LightningModule, "log", lambda self, name, *a, **k: (logged.append(name), log(self, name, *a, **k)))
    cli = fit(config_path("sine"), tmp_path, "--trainer.max_steps=23", "--trainer.log_every_n_steps=3",
              "--train_loss.flush_every=2")
    assert not [name for name in logged if name.startswith("train/")]
    events = EventAccumulator(cli.trainer.log_dir)
    events.Reload()
    for tag in ("train/loss", "train/loss_after_update"):
        assert [e.step for e in events.Scalars(tag)] == [2, 5, 8, 11, 14, 17, 20]
    curves = next(c for c in cli.trainer.callbacks if isinstance(c, LossCurves))
    assert [step for step, _ in curves.train] == [3, 6, 9, 12, 15, 18, 21]
    assert [e.value for e in events.Scalars("train/loss_after_update")] == [float(v) for _, v in curves.train]
    assert float(cli.trainer.callback_metrics["train/loss"]) == events.Scalars("train/loss")[-1].value


@pytest.mark.parametrize("scheduler, expected", [
    (["--lr_scheduler.class_path=torch.optim.lr_scheduler.StepLR", "--lr_scheduler.init_args.step_size=5",
      "--lr_scheduler.init_args.gamma=0.5"], 1e-3 * 0.5 ** 4),           # every step: halved at 5, 10, 15, 20
    (["--lr_scheduler.class_path=ReduceLROnPlateau", "--lr_scheduler.init_args.monitor=val/loss",
      "--lr_scheduler.init_args.factor=0.5", "--lr_scheduler.init_args.patience=0",
      "--lr_scheduler.init_args.threshold=10"], 1e-3 * 0.5 ** 4)])       # after each of the 4 validations (none
                                                                         # 10x better), not at each of the 20 steps
def test_a_schedule_steps_with_a_run_counted_in_steps(scheduler, expected, config_path, tmp_path):
    """The adding problem's stream has no epoch end: a scheduler there steps every step, and a
    plateau rule after each validation (every 5 steps here, patience counted in validations)."""
    cli = fit(config_path("adding_learn"), tmp_path, "--data.init_args.t=20", "--data.init_args.n_sequence=300",
              "--trainer.max_steps=20", "--trainer.val_check_interval=5", *scheduler)
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)


def test_a_run_without_a_logger_writes_no_config_into_the_working_directory(config_path, tmp_path, monkeypatch):
    """A run with ``--trainer.logger=false`` has no run folder: LightningCLI would write its
    ``config.yaml`` into the working directory, over a file of that name there. It writes none."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("mine\n")
    main(["fit", "--config", config_path("sine"), "--trainer.logger=false", "--trainer.max_steps=2",
          "--trainer.callbacks=[]"])
    assert (tmp_path / "config.yaml").read_text() == "mine\n"


@pytest.mark.parametrize("cell", ["lstm_peephole", "lstm_cec"])
def test_a_hand_written_cell_trains_through_the_cli_with_its_graph_logged(cell, tmp_path):
    """The whole CLI path with each hand-written cell, TensorBoard's traced graph included (a trace
    must see the autograd Function, not the kernels' forward-only call it makes under no_grad)."""
    main(["fit", "--config", str(ROOT / "configs" / "adding.yaml"), f"--model.init_args.net.cell={cell}",
          "--data.init_args.t=20", "--data.init_args.n_sequence=300", "--trainer.max_steps=3",
          "--trainer.val_check_interval=3", f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert (tmp_path / "adding" / "version_0" / "checkpoints" / "last.ckpt").is_file()
