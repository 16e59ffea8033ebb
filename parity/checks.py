"""What the TensorFlow side verifies for itself before it trains, so that a comparison is a check
and not a replay: the PyTorch side's initial weights have the structure and distributions of
TensorFlow's own initialisers, and every batch it trained on is one that the TensorFlow side
generated itself from the config (``original.py``). The TensorFlow side then trains on its own
arrays; only the weight values are copied, so that the two trajectories can be compared."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import original
from .recording import Recording

OK = "ok"


@dataclass
class TrainingInputs:
    """What a TensorFlow backend trains and validates on, and what the checks found."""

    batches: list            # (x, y) per step
    val_batches: list        # (x, y) in order
    checks: dict             # check name -> "ok: ..." or the first problem found


def passed(checks: dict) -> bool:
    return all(result.startswith(OK) for result in checks.values())


def reference(initializer: str, shape: tuple, seed: int = 0, **kwargs) -> np.ndarray:
    """A draw of TensorFlow's own initialiser (Keras' implementation of it) of ``shape``."""
    import keras

    return np.asarray(getattr(keras.initializers, initializer)(seed=seed, **kwargs)(shape, dtype="float64"))


def spread_matches(values: np.ndarray, ref: np.ndarray, rel: float, min_size: int) -> bool:
    """The standard deviations agree within ``rel`` (not checked below ``min_size`` values)."""
    return values.size < min_size or abs(values.std() / ref.std() - 1) <= rel


# A two-sample Kolmogorov-Smirnov test of a tensor's values against draws of TensorFlow's own
# initialiser (``REFERENCE_DRAWS`` values from as many seeds as it takes): the whole distribution,
# not only its bound and spread (a truncated normal with uniform's bound and std is caught; with
# 1,000 values and more, a shape difference of 0.05 in the CDF). Fails below ``KS_P_VALUE``: with
# every draw seeded, a correct initialiser fails it about once in ten thousand tensors.
KS_MIN_SIZE, KS_P_VALUE, REFERENCE_DRAWS = 200, 1e-4, 20_000


def distribution_matches(values: np.ndarray, initializer: str, shape: tuple, **kwargs) -> bool:
    """``values`` could be a draw of ``initializer`` for ``shape`` (not tested below ``KS_MIN_SIZE`` values)."""
    from scipy.stats import ks_2samp

    if values.size < KS_MIN_SIZE:
        return True
    draws = [reference(initializer, shape, seed, **kwargs).ravel() for seed in range(-(-REFERENCE_DRAWS // values.size))]
    return ks_2samp(values.ravel(), np.concatenate(draws)).pvalue >= KS_P_VALUE


def check_glorot(name: str, values: np.ndarray, shape: tuple) -> str | None:
    """Glorot-uniform as TF draws it: U(-a, a), a = √(6 / (fan_in + fan_out)) of ``shape``."""
    fan_in, fan_out = (shape[0], shape[0]) if len(shape) == 1 else shape
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    if np.abs(values).max() > limit * (1 + 1e-6):
        return f"{name}: |w| reaches {np.abs(values).max():.4g}, beyond glorot_uniform's bound {limit:.4g}"
    if not spread_matches(values, reference("GlorotUniform", shape), 0.1, 500):
        return f"{name}: std {values.std():.4g} is not glorot_uniform's ({limit / math.sqrt(3):.4g})"
    if not distribution_matches(values, "GlorotUniform", shape):
        return f"{name}: its values are not distributed as glorot_uniform's U(-{limit:.4g}, {limit:.4g}) (KS test)"
    return None


def check_chrono(k: int, bias: np.ndarray, t_max: float) -> str | None:
    """Chrono initialisation (Tallec & Ollivier 2018; not TensorFlow's, this port's option):
    b_f = log U(1, T_max - 1), b_i = -b_f, the other blocks zero."""
    b_i, b_f, b_g, b_o = np.split(bias, 4)
    if b_f.min() < 0 or b_f.max() > math.log(t_max - 1) + 1e-12 or not np.array_equal(b_i, -b_f) or b_g.any() or b_o.any():
        return f"layer {k} bias: not chrono initialisation for T_max = {t_max} (b_f in [0, log(T_max - 1)], b_i = -b_f)"
    return None


def check_recurrent(k: int, layer: dict, cell: str, chrono_t_max: float | None = None) -> str | None:
    """TF1's LSTMCell / BasicRNNCell: one glorot-uniform kernel over [x; h], bias zero with the
    forget gate's forget_bias = 1.0 added at run time (or chrono's gate biases, where the config
    asks for them), glorot-uniform peephole diagonals."""
    stacked = np.vstack([layer["kernel"], layer["recurrent_kernel"]])
    problem = check_glorot(f"layer {k} kernel", stacked, stacked.shape)
    if problem:
        return problem
    gates = {"rnn": "h", "lstm_cec": "igo"}.get(cell, "ifgo")
    if chrono_t_max is not None:
        return check_chrono(k, layer["bias"], chrono_t_max) or check_peephole(k, layer)
    hidden = stacked.shape[1] // len(gates)
    expected = np.zeros_like(layer["bias"])
    if "f" in gates:
        expected[gates.index("f") * hidden : (gates.index("f") + 1) * hidden] = 1.0
    if not np.array_equal(layer["bias"], expected):
        blocks = {gate: float(np.mean(block)) for gate, block in zip(gates, np.split(layer["bias"], len(gates)))}
        return (f"layer {k} bias: gate blocks average {blocks}; TF1 starts every bias at 0 and adds "
                f"forget_bias = 1.0 to the forget gate")
    return check_peephole(k, layer)


def check_peephole(k: int, layer: dict) -> str | None:
    """TF1's peephole diagonals: glorot-uniform over their shape (H,)."""
    for row, gate in zip(layer["peephole"] if layer.get("peephole") is not None else (), ("i", "f", "o")):
        problem = check_glorot(f"layer {k} peephole {gate}", row, row.shape)
        if problem:
            return problem
    return None


def check_initial_weights(recording: Recording) -> str:
    """The initial weights against TensorFlow's initialisers for ``init: tf1``; "ok: ..." or the problem."""
    spec, weights = recording.spec, recording.weights
    if spec.get("init") != "tf1":
        return f"{OK}: not checked (init: {spec.get('init')} draws PyTorch's defaults, not TensorFlow's)"
    for k, layer in enumerate(weights["recurrent"]):
        problem = check_recurrent(k, layer, spec["cell"], spec.get("chrono_t_max"))
        if problem:
            return problem
    kernel, bias = weights["dense"]["kernel"], weights["dense"]["bias"]
    if spec["kind"] != "language_model":  # the head: tf.truncated_normal(stddev=0.01) and tf.random_normal
        if np.abs(kernel).max() > 0.02 * (1 + 1e-6):
            return f"head kernel: |w| reaches {np.abs(kernel).max():.4g}, beyond truncated_normal(0.01)'s ±0.02"
        if not spread_matches(kernel, reference("TruncatedNormal", kernel.shape, stddev=0.01), 0.5, 20):
            return f"head kernel: std {kernel.std():.4g} is not truncated_normal(stddev=0.01)'s (0.0088)"
        if not np.all(np.isfinite(bias)) or np.any(bias == 0) or np.abs(bias).max() > 6:
            return f"head bias {bias.tolist()}: not a draw of tf.random_normal (N(0, 1)), which is never exactly 0"
    else:  # tf.random_normal_initializer() for the embedding and the decoder, a zero decoder bias
        for name, values in (("embedding", weights["embedding"]), ("decoder kernel", kernel)):
            if not spread_matches(values, reference("RandomNormal", values.shape, stddev=1.0), 0.05, 500):
                return f"{name}: std {values.std():.4g} is not random_normal's (1.0)"
            if not distribution_matches(values, "RandomNormal", values.shape, stddev=1.0):
                return f"{name}: its values are not distributed as random_normal's N(0, 1) (KS test)"
        if np.any(bias != 0):
            return "decoder bias: not zero"
    return f"{OK}: TensorFlow's initialisers (glorot bounds and spread, forget bias 1.0, head)"


def training_inputs(recording: Recording, dtype: str) -> TrainingInputs:
    """The batches a TensorFlow backend trains on. For sine and adding: its own, generated from the
    config as the original did, at the indices the PyTorch side drew (each batch checked to be one
    of them); for the language model, the PyTorch side's (no second tokenizer here: said so)."""
    checks = {"initial_weights": check_initial_weights(recording)}
    data = recording.data
    if data["kind"] not in original.GENERATORS:
        checks["data"] = f"{OK}: replayed (the {data['kind']} task's batches are the PyTorch side's)"
        return TrainingInputs(recording.batches, recording.val_batches, checks)
    generated = original.generate(data)
    indices, problem = original.check_batches(recording.batches, generated, data["sampling"],
                                              data.get("stream_start") or 0)
    if problem:
        checks["data"] = problem
        return TrainingInputs(recording.batches, recording.val_batches, checks)
    checks["data"] = (f"{OK}: every batch is one the TensorFlow side generated"
                      + (", in the original's numpy.random.choice order" if data["sampling"] == "original" else ""))
    # The PyTorch side's data passes through float32; class labels stay integers.
    as_run = lambda a: a if a.dtype.kind in "iu" else a.astype(np.float32).astype(dtype)
    batches = [(as_run(generated.x_train[i]), as_run(generated.y_train[i])) for i in indices]
    return TrainingInputs(batches, [(as_run(generated.x_val), as_run(generated.y_val))], checks)
