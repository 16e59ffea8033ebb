"""The command line: a short fit trains and leaves its artefacts; bad configs stop in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_pl import LossCurves
from lstm_pl.cli import CLI

ROOT = Path(__file__).resolve().parents[1]


def fit(config, tmp_path, *overrides):
    args = ["fit", "--config", config, f"--trainer.logger.init_args.save_dir={tmp_path}", *overrides]
    return CLI(args=args)


def test_sine_fit_lowers_loss_and_leaves_artifacts(config_path, tmp_path):
    cli = fit(config_path("sine"), tmp_path, "--trainer.max_epochs=80", "--model.init_args.hidden_size=20")
    curves = next(c for c in cli.trainer.callbacks if isinstance(c, LossCurves))
    first = [loss for _, loss in curves.train[:5]]
    last = [loss for _, loss in curves.train[-5:]]
    assert len(curves.train) == 80 and len(curves.val) == 80
    assert sum(last) < 0.2 * sum(first)
    run = Path(cli.trainer.log_dir)
    assert run.parent == tmp_path / "sine"
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").exists() and list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / "loss_curves.png").stat().st_size > 10_000 and (run / "waveform.png").stat().st_size > 10_000
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["init_args"]["hidden_size"] == 20 and config["trainer"]["max_epochs"] == 80
    events = EventAccumulator(str(run))
    events.Reload()
    assert {"train/loss_step", "val/loss", "val/closed_loop_mse"} <= set(events.Tags()["scalars"])
    assert {"loss_curves", "waveform"} <= set(events.Tags()["images"])
    assert "hidden_size" in (run / "hparams.yaml").read_text()


def test_validate_test_predict_from_checkpoint(config_path, tmp_path):
    cli = fit(config_path("sine_rnn"), tmp_path, "--trainer.max_epochs=2")
    ckpt = str(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt")
    for command in ("validate", "test", "predict"):
        run = CLI(args=[command, "--config", config_path("sine_rnn"), f"--ckpt_path={ckpt}",
                        f"--trainer.logger.init_args.save_dir={tmp_path / command}"])
        assert run.trainer.state.finished
        assert run.trainer.state.fn == command.replace("predict", "predict")


def run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "lstm_pl", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def test_print_config(config_path):
    result = run_cli("fit", "--config", config_path("sine"), "--print_config")
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout)["model"]["class_path"] == "lstm_pl.RegressionTask"


@pytest.mark.parametrize("override, key", [
    ("--model.init_args.cell=gru", "cell"),
    ("--model.init_args.hidden_size=0", "model.hidden_size"),
    ("--model.init_args.num_layers=-1", "model.num_layers"),
    ("--data.init_args.window=251", "data.window"),
    ("--model.init_args.hiden_size=3", "hiden_size"),
])
def test_bad_input_stops_with_one_line(config_path, tmp_path, override, key):
    result = run_cli("fit", "--config", config_path("sine"), override, f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("lstm_pl: error:") and key in errors[0]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_unknown_key_in_config_file(config_path, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs" / "sine.yaml").read_text().replace("  max_epochs: 500", "  max_epochz: 500"))
    result = run_cli("fit", "--config", str(bad))
    assert result.returncode == 2 and "max_epochz" in result.stderr.strip().splitlines()[-1]
    assert len(result.stderr.strip().splitlines()) == 1
