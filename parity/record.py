"""The original programs' runs, written down once, from the original's own source, not from
lstm_pl's configs: every constant of each run, with the commit, file and line it comes from.

The source: github.com/Yagami360/MachineLearning_Exercises_Python_TensorFlow, the folders
RNN_LSTM_TensorFlow/ (main1.py: sine, main2.py: adding) and RNN_TensorFlow/ (the plain RNN on the
sine); the seed README is RNN_LSTM_TensorFlow/README.md at commit de2e3ed, whose code is 7fd4522's.
The modules every run shares (cited at 7fd4522; the same text in every commit used here):
RecurrentNN.py (fit: L374-417, ``numpy.random.choice(len(X_train), size=batch_size)`` every step
from numpy's global stream, L385; the loss of that batch evaluated again after the update and
appended every ``eval_step`` = 1 steps, L404-413; head ``truncated_normal(stddev=0.01)`` L225 and
bias ``random_normal`` L249), RecurrentNNLSTM.py (``tf.contrib.rnn.LSTMCell``, forget_bias 1.0,
L102-105), NNOptimizer.py (``tf.train.AdamOptimizer(learning_rate, beta1, beta2)``, ε left at
TF's 1e-8, L275-279), NNLoss.py (``reduce_mean(square(t - y))``, L101-107), MLPreProcess.py
(the data, L200-277; ``train_test_split(test_size, random_state)``, L1005-1033).

``check`` holds a parsed config and a PyTorch run against one of these records: the harness's
TensorFlow side regenerates the data and the batch stream itself, but takes the sizes, the rates
and the budget from the config, so a wrong value there would train both sides the same wrong way.
"""

from __future__ import annotations

from dataclasses import dataclass

MAIN1 = "RNN_LSTM_TensorFlow/main1.py@7fd4522"
MAIN2 = "RNN_LSTM_TensorFlow/main2.py@7fd4522"
MAIN2_RNN = "RNN_LSTM_TensorFlow/main2.py@1119bd1"
MAIN2_UPSTREAM = "RNN_LSTM_TensorFlow/main2.py@024cea4"
RNN_MAIN1 = "RNN_TensorFlow/main1.py@701859f"
SHARED = "RecurrentNN.py@7fd4522"


@dataclass(frozen=True)
class Constant:
    """One setting of an original run: the value the port's config key must have, and where in
    the original it is fixed."""

    value: object
    source: str


# What every original run shares: the optimizer, the training loop, the curve, the cells' form.
COMMON = {
    "data.init_args.sampling": Constant("original", f"{SHARED} L385 numpy.random.choice(len(X_train), size=batch)"),
    "data.init_args.val_size": Constant(0.1, "ratio_test = 0.1 (main1.py L113-114, main2.py L202-203)"),
    "data.init_args.split_seed": Constant(1, "input_random_state = 1 (main1.py L113-114, main2.py L202-203)"),
    "data.init_args.seed": Constant(12, "generate_*(..., seed = 12) (main1.py L70, main2.py L62)"),
    "model.init_args.net.num_layers": Constant(1, "one cell (RecurrentNNLSTM.py L102, RecurrentNN.py L272)"),
    "model.init_args.net.init": Constant("tf1", f"{SHARED} L225, L249; TF1 LSTMCell/BasicRNNCell defaults"),
    "model.init_args.net.single_bias": Constant(True, "TF1 cells train one bias per gate"),
    "model.init_args.net.chrono_t_max": Constant(None, "TF1 LSTMCell: zero bias, forget_bias 1.0"),
    "optimizer.class_path": Constant("lstm_pl.optim.TFAdam", "NNOptimizer.py@e06bde5 L275 tf.train.AdamOptimizer"),
    "optimizer.init_args.lr": Constant(0.001, "learning_rate1 = 0.001 (main1.py L126, main2.py L213)"),
    "optimizer.init_args.betas": Constant([0.9, 0.999], "adam_beta1 = 0.9, adam_beta2 = 0.999 (main1.py L127-128, "
                                                        "main2.py L214-215)"),
    "optimizer.init_args.eps": Constant(1e-08, "NNOptimizer.py@e06bde5 L275-279: epsilon not passed, TF's 1e-08"),
    "lr_scheduler": Constant(None, "NNOptimizer.py: a constant learning rate"),
    "trainer.gradient_clip_val": Constant(None, "NNOptimizer.py L284 optimizer.minimize(loss): no clipping"),
    "trainer.accumulate_grad_batches": Constant(1, f"{SHARED} L380-390: one update per minibatch"),
    "trainer.log_every_n_steps": Constant(1, "eval_step = 1: the curve has a point every step (LossCurves records "
                                             "every log_every_n_steps)"),
    "loss_curves.after_update": Constant(True, f"{SHARED} L404-413: the batch's loss evaluated after its update"),
}

SINE = {
    "data.class_path": Constant("lstm_pl.SineDataModule", f"{MAIN1} L70 generate_sin_with_noize"),
    "data.init_args.length": Constant(251, f"{MAIN1} L68 times = numpy.arange(2.5 * T1 + 1)"),
    "data.init_args.period": Constant(100.0, f"{MAIN1} L65 T1 = 100"),
    "data.init_args.noise": Constant(0.05, f"{MAIN1} L66 noize_size1 = 0.05"),
    "data.init_args.window": Constant(25, f"{MAIN1} L81 n_in_sequence = 25"),
    "data.init_args.stream_start": Constant(0, f"{MAIN1} L208: the only fit of the process"),
    "data.init_args.batch_size": Constant(10, f"{MAIN1} L137 batch_size = 10"),
    "trainer.max_steps": Constant(500, f"{MAIN1} L136 epochs = 500"),
    "model.init_args.net.cell": Constant("lstm", f"{MAIN1} L130 RecurrentNNLSTM"),
    "model.init_args.net.hidden_size": Constant(50, f"{MAIN1} L133 n_hiddenLayer = 50"),
}

ADDING = {
    "data.class_path": Constant("lstm_pl.AddingDataModule", f"{MAIN2} L62 generate_adding_problem"),
    "data.init_args.t": Constant(250, f"{MAIN2} L62 t = 250"),
    "data.init_args.n_sequence": Constant(10000, f"{MAIN2} L62 n_sequence = 10000"),
    "data.init_args.stream_start": Constant(0, f"{MAIN2} L299: the only fit of the process"),
    "data.init_args.batch_size": Constant(10, f"{MAIN2} L224 batch_size = 10"),
    "trainer.max_steps": Constant(500, f"{MAIN2} L223 epochs = 500"),
    "model.init_args.net.cell": Constant("lstm", f"{MAIN2} L217 RecurrentNNLSTM"),
    "model.init_args.net.hidden_size": Constant(100, f"{MAIN2} L220 n_hiddenLayer = 100"),
}

RUNS: dict[str, dict[str, Constant]] = {
    "sine": {**COMMON, **SINE},
    # No commit has hidden 20: the seed README's figures rnn-lstm_1-1-3-h20 and rnn-lstm_1-2-h20
    # (its lines 130-136, 150-156) are main1.py with n_hiddenLayer edited to 20.
    "sine_20": {**COMMON, **SINE, "model.init_args.net.hidden_size": Constant(20, "seed README L130-136 (隠れ層：20 ノード)")},
    "sine_rnn": {**COMMON, **SINE,
                 "model.init_args.net.cell": Constant("rnn", f"{RNN_MAIN1} L134 RecurrentNN (BasicRNNCell, tanh)"),
                 "model.init_args.net.hidden_size": Constant(50, f"{RNN_MAIN1} L137 n_hiddenLayer = 50"),
                 "trainer.max_steps": Constant(500, f"{RNN_MAIN1} L140 epochs = 500"),
                 "data.init_args.batch_size": Constant(10, f"{RNN_MAIN1} L141 batch_size = 10")},
    "sine_rnn_20": {**COMMON, **SINE,
                    "model.init_args.net.cell": Constant("rnn", f"{RNN_MAIN1} L134 RecurrentNN (BasicRNNCell, tanh)"),
                    "model.init_args.net.hidden_size": Constant(20, "seed README L136, L156 (figure rnn_1-2-20)")},
    "adding": {**COMMON, **ADDING},
    # The only commit that trains the RNN: rnn1.fit (the LSTM, 500 draws) then rnn2.fit in one process.
    "adding_rnn": {**COMMON, **ADDING,
                   "model.init_args.net.cell": Constant("rnn", f"{MAIN2_RNN} L227 rnn2 = RecurrentNN(...)"),
                   "model.init_args.net.hidden_size": Constant(100, f"{MAIN2_RNN} L230 n_hiddenLayer = 100"),
                   "trainer.max_steps": Constant(500, f"{MAIN2_RNN} L233 epochs = 500"),
                   "data.init_args.batch_size": Constant(10, f"{MAIN2_RNN} L234 batch_size = 10"),
                   "data.init_args.stream_start": Constant(500, f"{MAIN2_RNN} L295-296 rnn1.fit (500 draws of "
                                                                "choice(9000, 10)) before rnn2.fit")},
    "adding_upstream": {**COMMON, **ADDING,
                        "trainer.max_steps": Constant(15000, f"{MAIN2_UPSTREAM} L223 epochs = 15000"),
                        "data.init_args.batch_size": Constant(100, f"{MAIN2_UPSTREAM} L224 batch_size = 100"),
                        "data.init_args.stream_start": Constant(0, f"{MAIN2_UPSTREAM} L282: the only fit")},
}


def lookup(config: dict, key: str) -> object:
    """The value of a dotted ``key`` in a parsed config (as a nested dict); ``loss_curves.*`` reads
    the ``lstm_pl.LossCurves`` callback's settings (absent: no curve is recorded at all)."""
    if key.startswith("loss_curves."):
        curves = [c for c in config["trainer"].get("callbacks") or [] if str(c.get("class_path", "")).endswith("LossCurves")]
        return (curves[0].get("init_args") or {}).get(key.split(".", 1)[1], False) if curves else "no LossCurves callback"
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def same(a: object, b: object) -> bool:
    """Equal, numbers compared as numbers (0.001 == 1e-3, 100 == 100.0) and lists element by element."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def check(run: str, config: dict, overrides: list[str], batch_sizes: list[int], steps: int, planned: int) -> str:
    """``ok: ...`` where ``config`` (the parsed config, overrides included) and the PyTorch run (its
    batch sizes, and its ``steps`` against the ``planned`` ones) are the original run ``run``, or
    where every difference is one the command line asked for (``overrides``, fewer steps than the
    original's budget: said, the comparison is then of a variant); otherwise the first difference,
    naming the key and the original's value and source."""
    overridden = {o[2:].split("=", 1)[0] for o in overrides if o.startswith("--")}
    variant = []
    for key, constant in RUNS[run].items():
        value = lookup(config, key)
        if same(value, constant.value):
            continue
        if key in overridden:
            variant.append(f"{key} (the original's: {constant.value!r})")
            continue
        return (f"{key} is {value!r} in configs/{run}.yaml; the original run has {constant.value!r} "
                f"({constant.source})")
    batch = RUNS[run]["data.init_args.batch_size"]
    if "data.init_args.batch_size" not in overridden and any(size != batch.value for size in batch_sizes):
        return (f"the PyTorch run trained on batches of {sorted(set(batch_sizes))}; the original's batch is "
                f"{batch.value} ({batch.source})")
    if steps != planned:
        return f"the PyTorch run took {steps} steps where {planned} were asked for"
    budget = RUNS[run]["trainer.max_steps"]
    if steps != budget.value:
        variant.append(f"{steps} of the original's {budget.value} steps")
    where = f"configs/{run}.yaml is the original run ({len(RUNS[run])} constants, parity/README.md)"
    return f"ok: {where}" + (f"; compared as a variant: {', '.join(variant)}" if variant else "")


def table() -> str:
    """parity/README.md's table of the records: one row per setting, one column per run (``·``: as
    in the row's first run that has it; ``-``: not a setting of that task), and the sources: the
    first run's, then each different one's."""
    runs = list(RUNS)
    keys = list(dict.fromkeys(key for run in runs for key in RUNS[run]))
    rows = ["| setting | " + " | ".join(runs) + " | source |", "| --- |" + " ---: |" * len(runs) + " --- |"]
    for key in keys:
        having = [r for r in runs if key in RUNS[r]]
        first = RUNS[having[0]][key]
        cells = ["-" if r not in having else repr(first.value) if r == having[0]
                 else "·" if same(RUNS[r][key].value, first.value) else repr(RUNS[r][key].value) for r in runs]
        sources = list(dict.fromkeys([first.source] + [RUNS[r][key].source for r in having
                                                         if not same(RUNS[r][key].value, first.value)]))
        rows.append(f"| `{key}` | " + " | ".join(c.replace("|", "\\|") for c in cells) + " | " + "; ".join(sources) + " |")
    return "\n".join(rows)
