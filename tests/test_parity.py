"""The TensorFlow parity harness: every config trains alike in PyTorch and TensorFlow (short float64
runs, both backends), the TensorFlow side checks what the PyTorch side started from and trained on,
and the harness catches the classic porting mistakes planted in the port (exit code 1)."""

import functools
import inspect
import json
import textwrap

import numpy as np
import pytest
import torch

tf = pytest.importorskip("tensorflow", reason="the parity extra (tensorflow) is not installed")

import keras  # noqa: E402

from parity import compare, pytorch_side, tensorflow_side, tf1_side  # noqa: E402

# The configs that train with what no TensorFlow run can follow step for step (SGD with a plateau
# schedule, dropout), or on data the TensorFlow side does not make (MNIST's files): the harness
# refuses them, naming the first key.
NOT_COMPARABLE = {"shakespeare_examples": "optimizer:", "shakespeare_best": "optimizer:", "shakespeare_awd": "optimizer:",
                  "shakespeare_cache": "optimizer:", "shakespeare_ensemble": "optimizer:",
                  "mnist": "data.class_path:"}
CONFIGS = sorted(p for p in compare.CONFIGS.glob("*.yaml") if p.stem not in ("base", *NOT_COMPARABLE))
# The configs that reproduce an original run: TF1's Adam and the original's batch stream.
ORIGINAL_RUNS = ["adding", "adding_rnn", "adding_upstream", "sine", "sine_20", "sine_rnn", "sine_rnn_20"]
# The configs on TF1's Adam: the original runs, and the digits (TensorFlow needs no help to follow).
TF_ADAM = [*ORIGINAL_RUNS, "digits", "digits_rnn"]
# Small versions of each task (by the config's name), so that every config gets a comparison within
# the suite's budget.
SHRINK = {
    "sine": [],
    "digits": [],
    "adding": ["--data.init_args.t=20", "--data.init_args.n_sequence=300", "--data.init_args.val_size=0.1"],
    # 10-window epochs: 25 steps cross the language model's state reset at an epoch's start twice.
    "shakespeare": ["--data.init_args.seq_len=10", "--trainer.limit_train_batches=10",
                    "--model.init_args.net.hidden_size=32", "--model.init_args.net.embedding_size=32"],
}


def shrink(config: str, corpus_args: list[str]) -> list[str]:
    """The small version of ``config``; the language models on the generated corpus."""
    return [*SHRINK[config.split("_")[0]], *(corpus_args if config.startswith("shakespeare") else [])]


def follows_pytorch(config: str) -> list[str]:
    """The flag that lets TensorFlow follow PyTorch's Adam, for the configs that choose it."""
    return [] if config in TF_ADAM else ["--tensorflow-follows-pytorch-adam"]


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.parametrize("config", [c.stem for c in CONFIGS])
def test_every_config_matches_keras_in_float64(config, tmp_path, capsys, corpus_args):
    code = compare.main([config, "--dtype", "float64", "--steps", "25", "--out", str(tmp_path), *shrink(config, corpus_args),
                         *follows_pytorch(config)])
    line = last_line(capsys)
    assert code == 0, line
    assert line.startswith(f"{config} [keras, float64, 25 steps") and ": PASS" in line
    report = json.loads((tmp_path / config / "report.json").read_text())
    assert report["passed"] and report["max_rel_diff"] <= 1e-6 and report["val_rel_diff"] <= 1e-6
    assert len(report["pytorch"]["losses"]) == len(report["tensorflow"]["losses"]) == 25
    assert report["tensorflow_follows_pytorch_adam"] == (config not in TF_ADAM)
    assert all(result.startswith("ok") for result in report["checks"].values())
    if report["spec"]["kind"] == "language_model":
        assert report["epochs"] == 3  # the state was reset twice on both sides
    else:  # the TensorFlow side trained on data it generated itself
        assert report["checks"]["data"].startswith("ok: every batch is one the TensorFlow side generated")


@pytest.mark.parametrize("config", ORIGINAL_RUNS)
def test_original_runs_match_tf1_in_float64(config, tmp_path, capsys, corpus_args):
    """The original programs rebuilt in tf.compat.v1 graph mode (LSTMCell / BasicRNNCell, stock
    AdamOptimizer, numpy's batch stream) against the port."""
    code = compare.main([config, "--tensorflow", "tf1", "--dtype", "float64", "--steps", "25", "--out", str(tmp_path),
                         *shrink(config, corpus_args)])
    line = last_line(capsys)
    assert code == 0 and line.startswith(f"{config} [tf1, float64, 25 steps]: PASS"), line
    report = json.loads((tmp_path / config / "report.json").read_text())
    assert report["checks"]["data"].endswith("in the original's numpy.random.choice order")


@pytest.mark.parametrize("cell, init", [("lstm_peephole", "tf1"), ("lstm_cec", "tf1"), ("rnn", "tf1"), ("lstm", "tf1"),
                                        ("lstm", "torch")])
def test_every_cell_matches_keras_in_float64(cell, init, tmp_path, capsys):
    """The cells no shipped config may use yet, and two stacked layers of each, on the sine task;
    and PyTorch's own initialisation, with one bias per gate."""
    code = compare.main(["sine", "--dtype", "float64", "--steps", "15", "--out", str(tmp_path),
                         f"--model.init_args.net.cell={cell}", "--model.init_args.net.num_layers=2",
                         "--model.init_args.net.hidden_size=16", f"--model.init_args.net.init={init}"])
    assert code == 0, capsys.readouterr().out


def test_language_model_variants_match_keras_in_float64(tmp_path, capsys, corpus_args):
    """What the shipped language-model configs leave off: tied weights, and a fresh state every window."""
    code = compare.main(["shakespeare", "--dtype", "float64", "--steps", "15", "--out", str(tmp_path),
                         *shrink("shakespeare", corpus_args), "--model.init_args.net.tie_weights=true",
                         "--model.init_args.stateful=false", "--tensorflow-follows-pytorch-adam"])
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


# ---- negative controls: one mistake planted in the port at a time, each caught (exit code 1) ----

def forget_bias_09(monkeypatch):
    from lstm_pl import cells, models

    monkeypatch.setattr(models, "init_tf1_", functools.partial(cells.init_tf1_, forget_bias=0.9))


def adam_beta2_099(monkeypatch):
    from lstm_pl.optim import TFAdam

    original_init = TFAdam.__init__
    monkeypatch.setattr(TFAdam, "__init__", lambda self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8:
                        original_init(self, params, lr, (betas[0], 0.99), eps))


def head_bias_zero(monkeypatch):
    monkeypatch.setattr(torch.nn.init, "normal_", lambda tensor, *args, **kwargs: torch.nn.init.zeros_(tensor))


def target_shifted(monkeypatch):
    from lstm_pl import data

    windows = data.sliding_windows
    monkeypatch.setattr(data, "sliding_windows", lambda series, window: (windows(series, window)[0],
                                                                         np.roll(windows(series, window)[1], -1, 0)))


def recorded(mistake):
    """A mistake made to the PyTorch run's record (the batches it trained on, the weights it started from)."""
    def plant(monkeypatch):
        record = pytorch_side.record

        def wrong(*args, **kwargs):
            recording = record(*args, **kwargs)
            mistake(recording)
            return recording
        monkeypatch.setattr(pytorch_side, "record", wrong)
    plant.__name__ = mistake.__name__
    return plant


@recorded
def batch_out_of_order(recording):
    recording.batches[10], recording.batches[11] = recording.batches[11], recording.batches[10]


@recorded
def gate_blocks_swapped(recording):
    """TF1 LSTMCell's blocks i, j, f, o read as PyTorch's i, f, g, o: the f and g blocks trade places."""
    for layer in recording.weights["recurrent"]:
        for key in ("kernel", "recurrent_kernel", "bias"):
            i, f, g, o = np.split(layer[key], 4, axis=-1)
            layer[key] = np.concatenate([i, g, f, o], axis=-1)


@pytest.mark.parametrize("mistake, caught_by", [
    (None, None),
    (forget_bias_09, "initial_weights: layer 0 bias"),
    # Adam's first update is lr·sign(g) whatever β₂ is: the second update, seen in step 3's loss, differs
    (adam_beta2_099, "rel diff over 1e-06 first at step 3,"),
    (head_bias_zero, "initial_weights: head bias"),
    (target_shifted, "data: step 1: a PyTorch target is not the generated target"),
    (batch_out_of_order, "data: step 11: the batch is not the original's numpy.random.choice draw"),
    (gate_blocks_swapped, "initial_weights: layer 0 bias"),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_negative_controls(mistake, caught_by, monkeypatch, tmp_path, capsys):
    if mistake is not None:
        mistake(monkeypatch)
    code = compare.main(["sine", "--dtype", "float64", "--steps", "30", "--out", str(tmp_path),
                         "--model.init_args.net.hidden_size=20"])
    line = last_line(capsys)
    if mistake is None:
        assert code == 0 and "PASS" in line, line
    else:
        assert code == 1 and ": FAIL, " in line and caught_by in line, line


def planted_peephole_backward_bug(monkeypatch):
    """p_o's gradient taken against c(t-1) instead of c(t), by editing the eager backward pass's
    source (and running the eager path: the compiled one is not edited at test time)."""
    from lstm_pl import cells, fused

    source = textwrap.dedent(inspect.getsource(cells.LSTMRecurrence.eager_backward))
    wrong = source.replace("(grad[:, :, -1] * c[1:])", "(grad[:, :, -1] * c[:-1])")
    assert wrong != source
    namespace = {}
    exec(compile(wrong.replace("@staticmethod\n", ""), "planted", "exec"), vars(cells), namespace)
    monkeypatch.setattr(cells.LSTMRecurrence, "eager_backward", staticmethod(namespace["eager_backward"]))
    monkeypatch.setattr(fused, "kernels", lambda: None)


@pytest.mark.parametrize("planted", [False, True])
def test_float32_tolerance_catches_a_subtle_backward_bug(planted, monkeypatch, tmp_path, capsys):
    """The peephole cell in float32 at the default steps: passes as it is, fails with the bug."""
    if planted:
        planted_peephole_backward_bug(monkeypatch)
    code = compare.main(["sine", "--out", str(tmp_path), "--model.init_args.net.cell=lstm_peephole"])
    line = last_line(capsys)
    assert (code, ": FAIL, " in line) == ((1, True) if planted else (0, False)), line


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


def test_tf1_lstm_cell_layout():
    """nn.LSTM's weights mapped onto TF1's LSTMCell (one kernel over [x; h], blocks i, j, f, o,
    forget_bias added at run time) give the same outputs, step after step."""
    import os

    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, batch_first=True).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    expected = lstm(x)[0].detach().numpy()
    layer = dict(kernel=lstm.weight_ih_l0.detach().numpy().T, recurrent_kernel=lstm.weight_hh_l0.detach().numpy().T,
                 bias=(lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy())
    kernel, bias = tf1_side.tf1_lstm_layout(layer)
    graph = tf.Graph()
    with graph.as_default():
        cell = tf.compat.v1.nn.rnn_cell.LSTMCell(4, forget_bias=1.0)
        inputs = tf.constant(x.numpy())
        state, outputs = cell.zero_state(2, tf.float64), []
        for t in range(6):
            output, state = cell(inputs[:, t, :], state)
            outputs.append(output)
        kernel_var, bias_var = cell.weights
        with tf.compat.v1.Session(graph=graph) as session:
            session.run([tf.compat.v1.assign(kernel_var, kernel), tf.compat.v1.assign(bias_var, bias)])
            got = np.stack(session.run(outputs), axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


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


@pytest.mark.parametrize("task, arguments, key", [
    ("sine", ["--model.init_args.net.single_bias=false"], "model.init_args.net.single_bias"),  # two biases per gate
    ("adding_solve", [], "--tensorflow-follows-pytorch-adam"),  # PyTorch's Adam, which TensorFlow does not have
    ("sine", ["--tensorflow", "tf1", "--model.init_args.net.cell=lstm_peephole"], "--tensorflow tf1"),
    ("adding_solve", ["--tensorflow", "tf1", "--tensorflow-follows-pytorch-adam"], "lstm_pl.optim.TFAdam"),
    ("shakespeare", ["--tensorflow-follows-pytorch-adam", "--model.init_args.net.uniform_init=0.1"],
     "model.init_args.net.uniform_init"),
    *[("shakespeare", ["--tensorflow-follows-pytorch-adam", f"--model.init_args.net.{key}=0.1"], f"model.init_args.net.{key}")
      for key in pytorch_side.AWD_REGULARISERS],
    ("shakespeare", ["--tensorflow-follows-pytorch-adam", "--averaging.start_epoch=1"], "averaging.start_epoch"),
    ("shakespeare", ["--tensorflow-follows-pytorch-adam", "--model.init_args.net.learned_cache_window=10"],
     "model.init_args.net.learned_cache_window"),
    ("shakespeare", ["--tensorflow-follows-pytorch-adam", "--data.init_args.variable_windows=true",
                     "--trainer.reload_dataloaders_every_n_epochs=1"], "data.init_args.variable_windows"),
    *[(config, [], key) for config, key in NOT_COMPARABLE.items()],
])
def test_refuses_what_tensorflow_cannot_follow(task, arguments, key, tmp_path, capsys, corpus_args):
    """One line naming the key, exit 2, nothing written."""
    text = corpus_args if task.startswith("shakespeare") else []
    assert compare.main([task, "--out", str(tmp_path / "run"), *arguments, *text]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("parity: error:") and key in errors[0], errors
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arguments, says", [
    (["no_such_task"], "no config"),
    (["base"], "not a task but the defaults"),
    (["--config", str(compare.CONFIGS / "base.yaml")], "required: data, model"),
])
def test_what_is_not_a_task_is_one_line(arguments, says, capsys):
    """An unknown name, base.yaml (the defaults, not a task) by name or by path: one line in the
    harness's own name, exit 2 (returned, or from the run's own parser)."""
    try:
        status = compare.main(arguments)
    except SystemExit as stop:
        status = stop.code
    assert status == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("parity: error:") and says in errors[0], errors


@pytest.fixture(scope="module")
def original_configs() -> dict[str, dict]:
    """Each original run's parsed config, as the harness parses it (no overrides)."""
    from parity import record

    return {run: pytorch_side.build(str(compare.CONFIGS / f"{run}.yaml"), []).config.clone().as_dict()
            for run in record.RUNS}


def test_every_original_run_config_is_its_record(original_configs):
    from parity import record

    assert sorted(record.RUNS) == sorted(ORIGINAL_RUNS)
    for run, config in original_configs.items():
        budget, batch = record.RUNS[run]["trainer.max_steps"].value, record.RUNS[run]["data.init_args.batch_size"].value
        assert record.check(run, config, [], [batch] * 3, budget, budget).startswith("ok: "), run


def planted(value):
    """A wrong value of the same kind: 1e-6 relative for a number, another string, the other bool."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * (1 + 1e-6) if isinstance(value, float) else value + 1
    if isinstance(value, list):
        return [planted(value[0]), *value[1:]]
    return "something else" if value is not None else 0.5


def test_a_wrong_value_in_any_original_run_config_fails_naming_it(original_configs):
    """Every constant of every record, planted wrong in turn (as a wrong value in the config file,
    or a changed code default that the config does not state, would be): the check names the key
    and the original's value; asked for on the command line, it is said to be a variant instead."""
    import copy

    from parity import record

    for run, config in original_configs.items():
        budget, batch = record.RUNS[run]["trainer.max_steps"].value, record.RUNS[run]["data.init_args.batch_size"].value
        for key, constant in record.RUNS[run].items():
            wrong = copy.deepcopy(config)
            if key.startswith("loss_curves."):
                curves = next(c for c in wrong["trainer"]["callbacks"] if c["class_path"].endswith("LossCurves"))
                curves["init_args"]["after_update"] = False
            else:
                *parents, last = key.split(".")
                holder = wrong
                for part in parents:
                    holder = holder[part]
                holder[last] = planted(constant.value)
            result = record.check(run, wrong, [], [batch], budget, budget)
            assert result.startswith(f"{key} is ") and repr(constant.value) in result, (run, key, result)
            asked = record.check(run, wrong, [f"--{key}=x"], [batch], budget, budget)
            assert asked.startswith("ok: ") and f"{key} (the original's: {constant.value!r})" in asked, (run, key)
        assert f"batches of {sorted([batch, 11])}" in record.check(run, config, [], [batch, 11], budget, budget)
        assert "took 7 steps where 9" in record.check(run, config, [], [batch], 7, 9)


def test_the_harness_fails_an_original_run_config_with_a_wrong_value(tmp_path, capsys, monkeypatch):
    """End to end: configs/sine.yaml with the noise planted 1e-6 off trains both sides the same
    (common mode: the curves agree) and still FAILS, naming the key and the original's line."""
    configs = tmp_path / "configs"
    configs.mkdir()
    sine = (compare.CONFIGS / "sine.yaml").read_text()
    assert "noise: 0.05," in sine
    (configs / "sine.yaml").write_text(sine.replace("noise: 0.05,", "noise: 0.05000005,"))
    monkeypatch.setattr(compare, "CONFIGS", configs)
    code = compare.main(["sine", "--tensorflow", "tf1", "--dtype", "float64", "--steps", "3", "--out", str(tmp_path / "run")])
    line = last_line(capsys)
    assert code == 1 and "FAIL, original_run: data.init_args.noise is 0.05000005" in line and "L66" in line, line
    report = json.loads((tmp_path / "run" / "sine" / "report.json").read_text())
    assert report["max_rel_diff"] < 1e-12  # the trajectories alone would have passed


def test_adding_rnn_trains_on_the_draws_after_the_lstms():
    """main2.py at 1119bd1 ran rnn1.fit (the LSTM: 500 draws of choice(9000, 10)) then rnn2.fit in
    one process: the RNN's first batch is the 501st draw, here from the original's own procedure
    (parity/original.py: the seeded stream, the adding data, train_test_split)."""
    import numpy

    from lstm_pl import AddingDataModule
    from parity import original

    data = AddingDataModule(t=250, n_sequence=10000, seed=12, batch_size=10, sampling="original", stream_start=500)
    data.setup("fit")
    first = next(iter(data.train_dataloader()))
    generated = original.generate(dict(kind="adding", t=250, n_sequence=10000, seed=12, val_size=0.1, split_seed=1))
    for _ in range(500):
        generated.stream.choice(9000, size=10)
    expected = generated.stream.choice(9000, size=10)
    numpy.testing.assert_array_equal(expected, [4468, 7174, 8352, 1987, 2698, 8953, 200, 6000, 2137, 2563])
    numpy.testing.assert_array_equal(first[0].numpy(), generated.x_train[expected].astype(numpy.float32))


def test_the_readme_table_is_the_record():
    from parity import record

    readme = (compare.ROOT / "parity" / "README.md").read_text()
    begin = readme.index("-->\n", readme.index("<!-- record: begin")) + 4
    assert readme[begin : readme.index("\n<!-- record: end -->")] == record.table()


def test_parity_compares_the_curve_the_original_recorded(tmp_path, capsys, monkeypatch):
    """Both curves are compared: the loss before each update, and the original's after-update
    curve as the run's own LossCurves records it. A LossCurves that records the loss before the
    update under after_update (the wrong curve) FAILS, although the first curve agrees."""
    from lstm_pl.callbacks import LossCurves

    code = compare.main(["sine", "--tensorflow", "tf1", "--dtype", "float64", "--steps", "6", "--out", str(tmp_path / "a")])
    assert code == 0, last_line(capsys)
    report = json.loads((tmp_path / "a" / "sine" / "report.json").read_text())
    assert report["after_update"]["steps"] == [1, 2, 3, 4, 5, 6] and report["after_update"]["max_rel_diff"] < 1e-12

    def before_update(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train.append((trainer.global_step, outputs["loss"].detach()))

    monkeypatch.setattr(LossCurves, "on_train_batch_end", before_update)
    code = compare.main(["sine", "--tensorflow", "tf1", "--dtype", "float64", "--steps", "6", "--out", str(tmp_path / "b")])
    line = last_line(capsys)
    assert code == 1 and "FAIL, rel diff over 1e-06 in the after-update curve, first at step 1" in line, line


def test_initial_weights_are_checked_by_their_distribution():
    """Within glorot's bound and with a spread inside the 10% the std check allows, a truncated
    normal kernel (adding's LSTM: 102 x 400 values) is still not glorot_uniform: the KS test
    against TensorFlow's own draws says so; TensorFlow's own draw passes."""
    import keras

    from parity import checks

    shape, hidden = (102, 400), 100
    limit = np.sqrt(6.0 / sum(shape))
    normal = np.random.RandomState(0).standard_normal(10 * shape[0] * shape[1])
    truncated = (normal[np.abs(normal) < 1.0][: shape[0] * shape[1]] * limit).reshape(shape)  # N(0, a) within ±a
    assert np.abs(truncated).max() < limit and abs(truncated.std() / (limit / np.sqrt(3)) - 1) < 0.1
    bias = np.concatenate([np.zeros(hidden), np.ones(hidden), np.zeros(2 * hidden)])
    layer = lambda kernel: dict(kernel=kernel[:2], recurrent_kernel=kernel[2:], bias=bias, peephole=None)
    assert "not distributed as glorot_uniform" in checks.check_recurrent(0, layer(truncated), "lstm")
    tf_draw = np.asarray(keras.initializers.GlorotUniform(seed=123)(shape, dtype="float64"))
    assert checks.check_recurrent(0, layer(tf_draw), "lstm") is None


def test_both_tensorflow_sides_validate_at_the_ports_cadence(tmp_path):
    """``benchmarks.runs`` times TF1's graph and Keras doing the port's work: with ``validate_every``
    each validates every that many steps (the last at the final step, the same value as the final
    validation), and Keras' after-update curve is TF1's (the original's ``loss.eval``), in float64."""
    from parity.checks import training_inputs

    recording = pytorch_side.record(str(compare.CONFIGS / "sine.yaml"), "float64", 6, tmp_path)
    inputs = training_inputs(recording, "float64")
    graph = tf1_side.train(recording, "float64", inputs, validate_every=3)
    eager = tensorflow_side.train(recording, "float64", inputs, validate_every=3, after_update=True)
    for side in (graph, eager):
        assert len(side["val_losses"]) == 2 and side["val_losses"][-1] == side["val_loss"]
    np.testing.assert_allclose(eager["losses_after_update"], graph["losses_after_update"], rtol=1e-9)
    np.testing.assert_allclose(eager["val_losses"], graph["val_losses"], rtol=1e-9)
    assert "losses_after_update" not in tensorflow_side.train(recording, "float64", inputs)  # compare.py's rule


def test_the_tf1_program_predicts_as_the_original_did(tmp_path):
    """``benchmarks.runs``' "same work" column: TF1's graph also runs the original's closed-loop
    ``predict`` (its own outputs fed back) at the port's figure cadence, and the one-step outputs on
    every window after training; both start from the first window with the final weights."""
    from parity import original
    from parity.checks import training_inputs

    recording = pytorch_side.record(str(compare.CONFIGS / "sine.yaml"), "float64", 6, tmp_path)
    inputs = training_inputs(recording, "float64")
    windows, _ = original.sine(recording.data, np.random.RandomState(recording.data["seed"]))
    graph = tf1_side.train(recording, "float64", inputs, validate_every=3, closed_loop_every=3,
                           first_window=windows[0], closed_loop_steps=len(windows), predict=windows)
    closed, one_step = graph["closed_loop"], graph["predictions"][:, 0]
    assert closed.shape == one_step.shape == (len(windows),) and np.isfinite(closed).all()
    assert closed[0] == one_step[0]  # the first window, the same (final) weights
    assert not np.allclose(closed[5:], one_step[5:])  # later ones from its own outputs, not the data
    assert tf1_side.train(recording, "float64", inputs)["closed_loop"] is None  # only where asked
