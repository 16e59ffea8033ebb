"""The original programs' data, made a second time for the TensorFlow side, from the config's
settings and with the original's own procedure (MLPreProcess.generate_sin_with_noize and
generate_adding_problem, main1.py's windowing loop, scikit-learn's train_test_split, the training
loop's numpy.random.choice), independently of lstm_pl. The TensorFlow side trains on these
arrays, and checks that every batch the PyTorch side trained on is one of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy
from sklearn.model_selection import train_test_split


@dataclass
class OriginalData:
    """The split arrays (float64, as the original made them) and numpy's stream after the
    generation, where the original's training loop starts drawing its minibatches."""

    x_train: numpy.ndarray
    y_train: numpy.ndarray
    x_val: numpy.ndarray
    y_val: numpy.ndarray
    stream: numpy.random.RandomState


def sine(settings: dict, stream: numpy.random.RandomState) -> tuple[numpy.ndarray, numpy.ndarray]:
    """main1.py: the noisy wave sin(2π·(t/T)) + noise·U(-1, 1), then windows of ``window`` values,
    each followed by its target."""
    t, period = numpy.arange(settings["length"], dtype=float), settings["period"]
    noize = settings["noise"] * stream.uniform(low=-1.0, high=1.0, size=len(t))
    wave = numpy.sin(2.0 * numpy.pi * (t / period)) + noize
    n_in_sequence = settings["window"]
    data, targets = [], []
    for i in range(0, len(wave) - n_in_sequence):
        data.append(wave[i : i + n_in_sequence])
        targets.append(wave[i + n_in_sequence])
    return numpy.array(data).reshape(len(data), n_in_sequence, 1), numpy.array(targets).reshape(len(targets), 1)


def adding(settings: dict, stream: numpy.random.RandomState) -> tuple[numpy.ndarray, numpy.ndarray]:
    """main2.py: uniform signals, two marked positions per sequence, the sum of the marked signals."""
    n_sequence, t = settings["n_sequence"], settings["t"]
    signals = stream.uniform(low=0.0, high=1.0, size=(n_sequence, t))
    masks = numpy.zeros(shape=(n_sequence, t))
    for i in range(n_sequence):
        mask = numpy.zeros(shape=(t,))
        mask[stream.permutation(numpy.arange(t))[:2]] = 1
        masks[i] = mask
    data = numpy.zeros(shape=(n_sequence, t, 2))
    data[:, :, 0], data[:, :, 1] = signals, masks
    return data, (signals * masks).sum(axis=1).reshape(n_sequence, 1)


def digits(settings: dict, stream: numpy.random.RandomState) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Not an original program's data: scikit-learn's 8x8 digits as lstm_pl's digits task reads
    them, grey levels / 16, each image a sequence of its rows (or of its pixels), the test share
    held out with scikit-learn's own train_test_split; returns the rest (``stream`` is unused)."""
    from sklearn.datasets import load_digits

    found = load_digits()
    images = found.images / 16.0
    x = images if settings["order"] == "rows" else images.reshape(len(images), -1, 1)
    x_rest, _, y_rest, _ = train_test_split(x, found.target, test_size=settings["test_size"],
                                            random_state=settings["split_seed"])
    return x_rest, y_rest


GENERATORS = {"sine": sine, "adding": adding, "digits": digits}


def generate(data: dict) -> OriginalData:
    """The data of ``data`` (``kind`` and the DataModule's settings), split as the original split it."""
    stream = numpy.random.RandomState(data.get("seed", 0))  # numpy.random.seed(seed), without the global state
    x, y = GENERATORS[data["kind"]](data, stream)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=data["val_size"], random_state=data["split_seed"])
    return OriginalData(x_train, y_train, x_val, y_val, stream)


def check_batches(batches: list, original: OriginalData, sampling: str,
                  drawn_before: int = 0) -> tuple[list[numpy.ndarray], str | None]:
    """The training indices of each recorded (x, y) batch, and the first disagreement found (None
    if none): a sequence that is not one of the generated training sequences, a target that is not
    its sequence's, or (with ``sampling: original``) indices other than the original's
    ``numpy.random.choice(len(X_train), size=batch_size)`` stream, after the ``drawn_before`` draws
    an earlier fit of the same process took. Compared in float32, the dtype both sides' data
    passes through."""
    row = lambda a: numpy.ascontiguousarray(a, dtype=numpy.float32).tobytes()
    index_of = {row(x): i for i, x in enumerate(original.x_train)}
    expected = original.stream if sampling == "original" else None
    for _ in range(drawn_before if expected is not None and batches else 0):
        expected.choice(len(original.x_train), size=len(batches[0][0]))
    indices = []
    for step, (x, y) in enumerate(batches, 1):
        found = [index_of.get(row(sequence)) for sequence in x]
        if None in found:
            return indices, f"step {step}: a PyTorch input sequence is not one of the generated training sequences"
        found = numpy.array(found)
        if not numpy.array_equal(numpy.asarray(y, numpy.float32), original.y_train[found].astype(numpy.float32)):
            return indices, f"step {step}: a PyTorch target is not the generated target of its sequence"
        if expected is not None and not numpy.array_equal(found, expected.choice(len(original.x_train), size=len(x))):
            return indices, f"step {step}: the batch is not the original's numpy.random.choice draw"
        indices.append(found)
    return indices, None
