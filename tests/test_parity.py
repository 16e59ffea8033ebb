"""The TensorFlow parity harness: every config trains alike in PyTorch and TensorFlow (short float64
runs), and the harness catches the classic porting mistakes (negative controls, exit code 1)."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

tf = pytest.importorskip("tensorflow", reason="the parity extra (tensorflow) is not installed")

import keras  # noqa: E402

from parity import compare, pytorch_side, tensorflow_side  # noqa: E402

CONFIGS = sorted(p for p in compare.CONFIGS.glob("*.yaml") if p.stem != "base")
# Small versions of each task (by the config's name), so that every config gets a comparison within
# the suite's budget.
SHRINK = {
    "sine": [],
    "adding": ["--data.init_args.t=20", "--data.init_args.n_sequence=300"],
    # 10-window epochs: 25 steps cross the language model's state reset at an epoch's start twice.
    "shakespeare": ["--data.init_args.seq_len=10", "--trainer.limit_train_batches=10",
                    "--model.init_args.net.hidden_size=32", "--model.init_args.net.embedding_size=32"],
}


def shrink(config: Path) -> list[str]:
    return SHRINK[config.stem.split("_")[0]]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_matches_tensorflow_in_float64(config, tmp_path, capsys):
    code = compare.main([config.stem, "--dtype", "float64", "--steps", "25", "--out", str(tmp_path), *shrink(config)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0, line
    assert line.startswith(f"{config.stem} [float64, 25 steps]: PASS")
    report = json.loads((tmp_path / config.stem / "report.json").read_text())
    assert report["passed"] and report["max_rel_diff"] <= 1e-6 and report["val_rel_diff"] <= 1e-6
    assert len(report["pytorch"]["losses"]) == len(report["tensorflow"]["losses"]) == 25
    if report["spec"]["kind"] == "language_model":
        assert report["epochs"] == 3  # the state was reset twice on both sides


@pytest.mark.parametrize("cell, init", [("lstm_peephole", "tf1"), ("lstm_cec", "tf1"), ("rnn", "tf1"), ("lstm", "tf1"),
                                        ("lstm", "torch")])
def test_every_cell_matches_tensorflow_in_float64(cell, init, tmp_path, capsys):
    """The cells no shipped config may use yet, and two stacked layers of each, on the sine task;
    and PyTorch's own initialisation, with one bias per gate."""
    code = compare.main(["sine", "--dtype", "float64", "--steps", "15", "--out", str(tmp_path),
                         f"--model.init_args.net.cell={cell}", "--model.init_args.net.num_layers=2",
                         "--model.init_args.net.hidden_size=16", f"--model.init_args.net.init={init}"])
    assert code == 0, capsys.readouterr().out


def test_language_model_variants_match_tensorflow_in_float64(tmp_path, capsys):
    """What the shipped language-model configs leave off: tied weights, and a fresh state every window."""
    code = compare.main(["shakespeare", "--dtype", "float64", "--steps", "15", "--out", str(tmp_path),
                         *SHRINK["shakespeare"], "--model.init_args.net.tie_weights=true",
                         "--model.init_args.stateful=false"])
    assert code == 0, capsys.readouterr().out


def test_report_files(tmp_path, capsys):
    """One comparison leaves the JSON report, the overlay and TensorBoard scalars for both sides."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert compare.main(["sine_rnn", "--steps", "20", "--out", str(tmp_path)]) == 0  # float32, its default tolerance
    folder = tmp_path / "sine_rnn"
    report = json.loads((folder / "report.json").read_text())
    assert report["dtype"] == "float32" and report["tolerance"] == compare.TOLERANCE["float32"]
    assert {"max_abs_diff", "max_rel_diff", "first_step_over_tolerance", "val_rel_diff", "verdict"} <= set(report)
    assert report["pytorch"]["val_loss"] > 0 and report["tensorflow"]["val_loss"] > 0
    assert (folder / "overlay.png").stat().st_size > 10_000
    assert "sine_rnn" in (folder / "pytorch" / "config.yaml").read_text()  # the resolved config it ran
    for side in ("pytorch", "tensorflow"):
        events = EventAccumulator(str(folder / side))
        events.Reload()
        losses = [e.value for e in events.Scalars("train/loss")]
        assert np.allclose(losses, report[side]["losses"], rtol=1e-6)
    assert not list(tmp_path.rglob("*.partial"))


# ---- negative controls: one deliberate mistake on the TensorFlow side, caught as a mismatch ----

def swap_gate_blocks(recording):
    """Keras' blocks read in TF1 LSTMCell's order (i, j, f, o): the f and g blocks trade places."""
    for layer in recording.weights["recurrent"]:
        for key in ("kernel", "recurrent_kernel", "bias"):
            i, f, g, o = np.split(layer[key], 4, axis=-1)
            layer[key] = np.concatenate([i, g, f, o], axis=-1)


def drop_forget_bias(recording):
    """TF1 added forget_bias = 1.0 at run time; a port that forgets it starts the f block at 0."""
    for layer in recording.weights["recurrent"]:
        hidden = layer["bias"].shape[0] // 4
        layer["bias"][hidden : 2 * hidden] -= 1.0


def learning_rate_off(recording):
    recording.optimizer["lr"] *= 1.1


def batch_out_of_order(recording):
    recording.batches[10], recording.batches[11] = recording.batches[11], recording.batches[10]


@pytest.fixture(scope="module")
def sine_recording(tmp_path_factory):
    """One short float64 PyTorch run of the sine LSTM, recorded once for all the controls."""
    folder = tmp_path_factory.mktemp("recording") / "pytorch"
    return pytorch_side.record(str(compare.CONFIGS / "sine.yaml"), "float64", 30, folder,
                               ["--model.init_args.net.hidden_size=20"])


@pytest.mark.parametrize("mistake", [None, swap_gate_blocks, drop_forget_bias, learning_rate_off, batch_out_of_order],
                         ids=["no mistake", "gate blocks swapped", "forget bias dropped", "learning rate +10%",
                              "one batch out of order"])
def test_negative_controls(mistake, sine_recording, monkeypatch, tmp_path, capsys):
    recording = copy.deepcopy(sine_recording)
    if mistake is not None:
        mistake(recording)
    monkeypatch.setattr(pytorch_side, "record", lambda *args, **kwargs: recording)
    code = compare.main(["sine", "--dtype", "float64", "--out", str(tmp_path)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads((tmp_path / "sine" / "report.json").read_text())
    if mistake is None:
        assert code == 0 and "PASS" in line
        return
    assert code == 1 and "FAIL" in line, line
    first = report["first_step_over_tolerance"]
    # where each mistake first shows: at once (the weights), after the first update (the lr), at the batch
    assert first == {learning_rate_off: 2, batch_out_of_order: 11}.get(mistake, 1)
    assert f"first at step {first}," in line


# ---- the pieces the equivalence rests on ----

def test_torch_adam_matches_pytorch_where_keras_adam_does_not():
    """Tiny gradients, where ε dominates: PyTorch's and Keras' stock Adam part ways (Keras adds its
    ε to √v, not to √v̂); TorchAdam follows PyTorch to rounding."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(5, 3))
    gradients = [rng.normal(size=(5, 3)) * 1e-7 for _ in range(30)]
    weight = torch.nn.Parameter(torch.tensor(start))
    adam = torch.optim.Adam([weight], lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    for g in gradients:
        weight.grad = torch.tensor(g)
        adam.step()
    finals = {}
    for name, optimizer in (("torch", tensorflow_side.TorchAdam(1e-3, 0.9, 0.999, 1e-8)),
                            ("keras", keras.optimizers.Adam(1e-3, 0.9, 0.999, 1e-8))):
        variable = tf.Variable(start)
        for g in gradients:
            optimizer.apply([tf.constant(g)], [variable])
        finals[name] = variable.numpy()
    moved = weight.detach().numpy() - start
    assert np.allclose(finals["torch"] - start, moved, rtol=1e-12, atol=0)
    assert not np.allclose(finals["keras"] - start, moved, rtol=1e-3, atol=0)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clipping_matches_clip_grad_norm(max_norm):
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=s) for s in [(4, 3), (7,), (2, 2)]]
    tensors = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    clipped = tensorflow_side.clip_gradients([tf.constant(g) for g in grads], dict(value=max_norm, algorithm="norm"))
    for t, c in zip(tensors, clipped):
        np.testing.assert_allclose(c.numpy(), t.grad.numpy(), rtol=1e-14)


def test_refuses_what_tensorflow_cannot_follow(tmp_path, capsys):
    """Two trainable biases per gate cannot match TF's one: one line, exit 2, nothing written."""
    assert compare.main(["sine", "--out", str(tmp_path / "run"), "--model.init_args.net.single_bias=false"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("parity: error:") and "model.init_args.net.single_bias" in errors[0]
    assert not (tmp_path / "run").exists()
    assert compare.main(["no_such_task"]) == 2
    assert "no config" in capsys.readouterr().err
