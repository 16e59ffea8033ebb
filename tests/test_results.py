"""The results regeneration: runs each (arm, seed) once as ordinary CLI runs, reads them back from
their folders, summarises over seeds, and rewrites only its own block of RESULTS.md."""

import json
import os
import sys

import pytest

from lstm_pl.results import configs, markdown, registry, report, runner
from lstm_pl.results.registry import Arm, Column, Experiment


def test_summary_is_median_and_range():
    assert report.summary([0.3, 0.1, 0.2], "{:.1f}") == "0.2 [0.1, 0.3]"
    assert report.summary([0.5, None], "{:.1f}") == "0.5"
    assert report.summary([None, float("nan")], "{:.1f}") == "n/a"


def test_seeds_and_the_row_command():
    experiment = registry.EXPERIMENTS[2]  # adding_solve: seeds 12, 13, 14; the batch stream follows the seed
    assert runner.seeds_of(experiment, quick=False) == [12, 13, 14]
    arm = experiment.arms[0]
    assert runner.arguments(experiment, arm, 12, quick=False) == ["--config", "configs/adding_solve.yaml"]
    assert runner.arguments(experiment, arm, 13, quick=True)[-3:] == [
        "--trainer.max_steps=600", "--seed_everything=13", "--data.init_args.sampling_seed=13"]
    assert runner.command(experiment, arm, quick=False) == (
        "python -m lstm_pl fit --config configs/adding_solve.yaml --seed_everything=S --data.init_args.sampling_seed=S")
    by_name = {}  # an arm's name is its runs folder: one name, one configuration (its label may differ by table)
    for arm in (arm for e in registry.EXPERIMENTS + registry.EXTRA for arm in e.arms):
        assert by_name.setdefault(arm.name, (arm.config, arm.overrides)) == (arm.config, arm.overrides)


def test_the_registry_names_shipped_configs():
    named = {arm.config for e in registry.EXPERIMENTS + registry.EXTRA for arm in e.arms}
    named |= {registry.SINE_DATA, registry.ADDING_DATA}
    assert all((configs.CHECKOUT / config).is_file() for config in named)
    assert configs.first_seed() == 12  # configs/base.yaml's seed_everything: seed S = 12, 13, ...


def test_the_data_figures_draw_what_the_configs_set(tmp_path, config_path):
    """No data setting is written twice: the figures take the DataModule the config builds, a
    variant's own settings and the chain of ``config:`` files it starts from included."""
    title = report.sine_data_figure().axes[0].get_title()
    assert title == "Sine data: 251 points, noise 0.05·U(-1, 1), numpy seed 12"  # the original's, as configs/sine.yaml sets it
    sine = tmp_path / "sine_short.yaml"
    sine.write_text(f"config: {config_path('sine')}\ndata.init_args.length: 120\ndata.init_args.noise: 0.2\n")
    ax = report.sine_data_figure(str(sine)).axes[0]
    assert len(ax.lines[0].get_ydata()) == 120 and ax.get_title().startswith("Sine data: 120 points, noise 0.2·U")
    adding = tmp_path / "adding_small.yaml"
    adding.write_text(f"config: {config_path('adding')}\ndata.init_args.t: 30\ndata.init_args.n_sequence: 50\n")
    figure = report.adding_data_figure(str(adding))
    assert [ax.get_ylabel() for ax in figure.axes] == ["#1", "#2", "#49", "#50"]
    assert all(len(ax.lines[0].get_ydata()) == 30 for ax in figure.axes)
    assert figure.get_suptitle().startswith("Adding problem (T=30, seed 12)")


def test_sections_are_replaced_in_place_and_the_rest_kept(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nprose before\n")
    markdown.write_results({"about": "first\n", "sine": "sine tables\n", "adding": "adding tables\n"}, path)
    markdown.write_results({"sine": "new sine tables\n", "shakespeare": "lm tables\n"}, path)  # as --only does
    text = path.read_text()
    assert text.startswith("# Results\n\nprose before\n")
    assert "sine tables" not in text.replace("new sine tables", "")
    order = [text.index(t) for t in ("first", "new sine tables", "adding tables", "lm tables", markdown.END)]
    assert order == sorted(order) and text.count(markdown.BEGIN) == 1
    text = text.replace("prose before", "prose edited by hand") + "prose after\n"
    path.write_text(text)
    markdown.write_results({"adding": "adding again\n"}, path)
    assert "prose edited by hand" in path.read_text() and path.read_text().endswith("prose after\n")


def tiny(config_path, *overrides, seeds=2):
    return Experiment(
        "tiny", "tiny", (Arm("tiny_rnn", "RNN 20", config_path("sine_rnn_20"), overrides),),
        (Column("test MSE", lambda run: run.test("test/loss")),), curve="train/loss", seeds=seeds, quick_seeds=seeds,
        quick=("--trainer.max_steps=6", "--trainer.val_check_interval=3", "--trainer.callbacks=[]"))


def test_runs_train_test_report_and_are_not_rerun(config_path, tmp_path):
    experiment = tiny(config_path)
    runs = runner.run_all([experiment], tmp_path, quick=True, jobs=2)
    assert sorted(runs) == [("tiny_rnn", 12), ("tiny_rnn", 13)]
    result = json.loads((tmp_path / "tiny_rnn" / "seed_13" / "result.json").read_text())
    assert result["steps"] == 6 and "--seed_everything=13" in result["command"]
    tests = [runs[("tiny_rnn", s)].test("test/loss") for s in (12, 13)]
    assert all(t is not None and t > 0 for t in tests) and tests[0] != tests[1]  # seeds differ
    figures = tmp_path / "figures"
    figures.mkdir()
    sections = report.report([experiment], runs, True, figures, 60.0, 2)
    assert list(sections) == ["about", "data", "tiny"] and "QUICK MODE" in sections["about"]
    assert "| RNN 20 | " in sections["tiny"] and "--only tiny --quick" in sections["tiny"]
    assert (figures / "tiny_curves.png").stat().st_size > 0 and (figures / "data_adding.png").exists()
    stamp = (tmp_path / "tiny_rnn" / "seed_12" / "result.json").stat().st_mtime_ns
    runner.run_all([experiment], tmp_path, quick=True, jobs=1)
    assert (tmp_path / "tiny_rnn" / "seed_12" / "result.json").stat().st_mtime_ns == stamp


def test_an_ensemble_is_tested_from_its_members_and_reported(config_path, corpus_args, tmp_path):
    """An experiment with ``ensemble``: its seeds' runs, then one test of the first with the others as
    its ensemble; the report's ensemble table has its members' and its own perplexity and their
    summed CPU seconds; a second regeneration reads it back."""
    experiment = Experiment(
        "tiny_lm", "tiny", (Arm("tiny_lm", "LM", config_path("shakespeare"), tuple(corpus_args)),),
        (Column("test perplexity", lambda run: run.test("test/perplexity"), "{:.1f}"),), curve="val/perplexity",
        seeds=2, quick_seeds=2, per_seed=True, ensemble=2, array_data=False,
        quick=("--trainer.max_steps=4", "--data.init_args.seq_len=10", "--trainer.limit_val_batches=2",
               "--trainer.limit_test_batches=2"))
    runs = runner.run_all([experiment], tmp_path, quick=True, jobs=2)
    assert set(runs) == {("tiny_lm", 12), ("tiny_lm", 13), ("tiny_lm", "ensemble_12-13")}
    ensemble = runs[("tiny_lm", "ensemble_12-13")]
    members = [runs[("tiny_lm", seed)] for seed in (12, 13)]
    assert ensemble.result["cpu_seconds"] == sum(run.result["cpu_seconds"] for run in members)
    mixed = ensemble.last("test/perplexity_ensemble")
    assert mixed is not None and ensemble.last("test/perplexity") == members[0].test("test/perplexity")
    lines = report.ensemble_table(experiment, runs, quick=True).splitlines()
    assert lines[2].startswith("| LM, seeds 12 to 13 | ") and f"| {mixed:.1f} |" in lines[2]
    assert all(f"{run.test('test/perplexity'):.1f}" in lines[2] for run in members)
    stamp = (tmp_path / "tiny_lm" / "ensemble_12-13" / "result.json").stat().st_mtime_ns
    runner.run_all([experiment], tmp_path, quick=True, jobs=1)
    assert (tmp_path / "tiny_lm" / "ensemble_12-13" / "result.json").stat().st_mtime_ns == stamp


def test_a_failed_run_is_named_with_its_log(config_path, tmp_path):
    experiment = tiny(config_path, "--model.init_args.net.hidden_size=0", seeds=1)
    with pytest.raises(RuntimeError, match=r"tiny_rnn seed 12: fit failed, see .*seed_12\.log"):
        runner.run_all([experiment], tmp_path, quick=True, jobs=1)
    assert not (tmp_path / "tiny_rnn" / "seed_12" / "result.json").exists()
    assert "hidden_size" in (tmp_path / "tiny_rnn" / "seed_12.log").read_text()


def test_child_reports_its_exit_status_and_own_cpu_seconds(tmp_path):
    """The CPU seconds of a run are its own process's (user + system), whatever runs beside it."""
    busy = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3: pass"
    with open(tmp_path / "log", "w") as out:
        status, cpu = runner.child([sys.executable, "-c", busy], out, dict(os.environ))
        assert status == 0 and 0.3 <= cpu < 5
        assert runner.child([sys.executable, "-c", "raise SystemExit(3)"], out, dict(os.environ))[0] == 3


def test_a_per_seed_table_has_each_runs_own_numbers_and_the_counts(tmp_path):
    """Where a criterion is met or missed run by run (the adding problem solved), the table shows
    every seed's numbers, then each yes/no column's count and the other columns' median [min, max]."""
    arm = Arm("a", "LSTM", "configs/adding_solve.yaml")
    experiment = Experiment("x", "X", (arm,), (Column("MSE", lambda run: run.result["mse"], "{:.1e}"),
                                               Column("solved", lambda run: float(run.result["mse"] < 1e-3), count=True)),
                            curve="val/loss", seeds=3, per_seed=True)
    runs = {("a", seed): runner.Run(tmp_path, {"mse": mse}) for seed, mse in zip((12, 13, 14), (2e-5, 0.17, 4e-4))}
    lines = report.table(experiment, runs, quick=False).splitlines()
    assert lines[2:6] == ["| LSTM | 12 | 2.0e-05 | yes |", "| LSTM | 13 | 1.7e-01 | no |", "| LSTM | 14 | 4.0e-04 | yes |",
                          "| LSTM, all seeds | | 4.0e-04 [2.0e-05, 1.7e-01] | 2 of 3 |"]
    assert "configs/adding_solve.yaml --seed_everything=S" in lines[-1]


def test_misses_are_the_test_sequences_outside_the_tolerance(tmp_path, config_path, capsys):
    """``python -m lstm_pl.results.misses`` counts what ``test`` scores: the sequences outside the
    tolerance are the share ``test/within_tolerance`` leaves, each listed with its two markers."""
    from lstm_pl.cli import CLI
    from lstm_pl.results import misses

    config = tmp_path / "small.yaml"
    config.write_text(f"config: {config_path('adding')}\ndata.init_args.t: 30\ndata.init_args.n_sequence: 400\n")
    cli = CLI(args=["--config", str(config), "--trainer.max_steps=30", f"--trainer.logger.init_args.save_dir={tmp_path}"],
              run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    within = cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]["test/within_tolerance"]
    capsys.readouterr()
    misses.main(["--config", str(config), "--ckpt_path", str(next(tmp_path.rglob("last.ckpt")))])
    lines = capsys.readouterr().out.splitlines()
    count = int(lines[-1].split(" of 400 ")[0])
    assert count == round((1 - within) * 400) and len(lines) == count + 2
    assert all(len(line.split("]")[0].split(",")) == 2 for line in lines[1:-1])  # two markers each


def test_misses_refuses_a_task_without_a_test_set(config_path, capsys):
    from lstm_pl.results import misses

    with pytest.raises(SystemExit) as stopped:
        misses.main(["--config", config_path("sine"), "--ckpt_path", "absent.ckpt"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("lstm_pl.results.misses: error: --config: ")


def test_a_run_another_command_is_training_is_left_alone(tmp_path):
    """Two results commands on one runs folder: the second finds the first's lock (a live process)
    and stops with one line, leaving the unfinished run's folder as it is (it would otherwise take
    it for a run cut short and delete it); a lock whose process has ended is taken over."""
    import subprocess

    experiment = registry.EXPERIMENTS[2]
    arm = experiment.arms[0]
    folder = tmp_path / arm.name / "seed_13"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_text("training")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / arm.name / "seed_13.lock").write_text(str(other.pid))
        with pytest.raises(RuntimeError, match=f"seed_13 is being trained by process {other.pid}"):
            runner.train(experiment, arm, 13, tmp_path, quick=True)
        assert (folder / "checkpoints" / "last.ckpt").read_text() == "training"
    finally:
        other.kill()
        other.wait()
    lock = tmp_path / arm.name / "seed_13.lock"  # its process has ended: a stale lock
    with runner.run_lock(lock):
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_a_run_cut_short_goes_on_from_its_last_checkpoint(config_path, tmp_path):
    """A run killed during its fit after a checkpoint (here: a first part that stops at step 3 of
    6, its ``progress.json`` as the runner writes it) is not started again: the fit goes on from
    ``last.ckpt``, the first part's logged steps stay, and the result's CPU seconds add the first
    part's (carried in the checkpoint) to the second's. With other arguments it starts again."""
    import subprocess

    from lstm_pl.checkpoints import read_checkpoint

    experiment = tiny(config_path, seeds=1)
    arm = experiment.arms[0]
    args = runner.arguments(experiment, arm, 12, quick=True)
    folder = tmp_path / arm.name / "seed_12"
    folder.mkdir(parents=True)
    (folder / "progress.json").write_text(json.dumps({"arguments": args, "fit": None}))
    first_part = [sys.executable, "-m", "lstm_pl", "fit", *args, "--trainer.max_steps=3",
                  f"--trainer.logger.init_args.save_dir={tmp_path}", f"--trainer.logger.init_args.name={arm.name}",
                  "--trainer.logger.init_args.version=seed_12"]
    subprocess.run(first_part, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    first_cost = runner.cost_so_far(folder / "checkpoints" / "last.ckpt")
    assert read_checkpoint(folder / "checkpoints" / "last.ckpt")["global_step"] == 3 and first_cost["cpu_seconds"] > 0
    run = runner.run_all([experiment], tmp_path, quick=True, jobs=1)[(arm.name, 12)]
    assert run.result["steps"] == 6 and run.result["resumed"]
    assert run.result["cpu_seconds"] > first_cost["cpu_seconds"] and run.result["seconds"] > first_cost["wall_seconds"]
    assert len(run.scalars("val/loss")) == 2  # the first part's validation (after step 3) kept beside the second's
    assert "going on from" in (tmp_path / arm.name / "seed_12.log").read_text()

    (folder / "result.json").unlink()  # cut short again, now between its fit and its test: the test alone
    stamp = (folder / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    again = runner.run_all([experiment], tmp_path, quick=True, jobs=1)[(arm.name, 12)]
    assert (folder / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp
    assert again.result["cpu_seconds"] == run.result["cpu_seconds"] and again.test("test/loss") == run.test("test/loss")

    (folder / "result.json").unlink()  # the arguments changed since: the run starts again
    other = tiny(config_path, "--model.init_args.net.hidden_size=12", seeds=1)
    fresh = runner.run_all([other], tmp_path, quick=True, jobs=1)[(arm.name, 12)]
    assert not fresh.result["resumed"] and len(fresh.scalars("val/loss")) == 2


def test_a_checkpoint_without_its_cost_is_not_gone_on_from(tmp_path):
    assert runner.cost_so_far(tmp_path / "none.ckpt") is None
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    assert runner.cost_so_far(tmp_path / "broken.ckpt") is None
