"""Images as sequences: the digits and MNIST DataModules, IDX files, downloads, and a short fit."""

from __future__ import annotations

import gzip
import hashlib
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lstm_pl.cli import CLI
from lstm_pl.errors import ConfigError
from lstm_pl.images import DigitsDataModule, MNISTDataModule, read_idx

ROOT = Path(__file__).resolve().parents[1]


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) as an IDX file: 0, 0, type 0x08, the dimensions, then the bytes."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 10, gzipped: bool = True) -> dict[str, str]:
    """A tiny MNIST in ``folder`` (random pixels, labels 0..9 in turn); returns each file's SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    digests = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        for kind, array in (("images-idx3-ubyte", rng.randint(0, 256, (n, 28, 28)).astype(np.uint8)),
                            ("labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))):
            data = idx_bytes(array)
            name = f"{part}-{kind}" + (".gz" if gzipped else "")
            (folder / name).write_bytes(gzip.compress(data) if gzipped else data)
            digests[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    return digests


def test_a_step_is_a_pixel_row_or_a_pixel():
    from sklearn.datasets import load_digits

    images = load_digits().images / 16.0
    rows = DigitsDataModule(order="rows")
    rows.setup()
    assert rows.input_size == 8 and rows.x.shape[1:] == (8, 8)
    test_x, test_y = rows.test_set.tensors
    n_test = len(test_y)
    assert n_test == 360 and len(rows.train_set) + len(rows.val_set) + n_test == 1797
    # Every test sequence is one image, its step t the image's row t.
    first = test_x[0].numpy()
    match = [k for k in range(len(images)) if np.allclose(images[k], first)]
    assert match and np.allclose(first[3], images[match[0]][3])
    pixels = DigitsDataModule(order="pixels")
    pixels.setup()
    assert pixels.input_size == 1 and pixels.x.shape[1:] == (64, 1)
    assert np.array_equal(pixels.x[:, 8 * 2 + 5, 0], rows.x[:, 2, 5])  # step 21 = row 2, column 5
    assert test_y.dtype == torch.long


def test_short_fit_lifts_accuracy_well_above_chance(tmp_path):
    cli = CLI(args=["fit", "--config", str(ROOT / "configs" / "digits.yaml"), "--trainer.max_epochs=6",
                    f"--trainer.logger.init_args.save_dir={tmp_path}",
                    "--trainer.logger.init_args.version=0"])
    assert cli.model.net.head.out_features == 10 and cli.model.net.rnn.input_size == 8  # linked from the data
    accuracy = float(cli.trainer.callback_metrics["val/accuracy"])
    assert accuracy > 0.6, accuracy  # chance: 0.1
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    run = tmp_path / "digits" / "version_0"
    for figure in ("confusion_matrix", "misclassified", "confusion_matrix_test", "misclassified_test", "loss_curves"):
        assert (run / f"{figure}.png").is_file(), figure
    # Validation once an epoch: the best checkpoint is kept beside last.ckpt (Lightning would defer
    # its save to the epoch's end, after last.ckpt had been written, and then skip it).
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1 and (run / "checkpoints" / "last.ckpt").exists()


def test_read_idx_gzipped_or_not(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    assert np.array_equal(read_idx(tmp_path / "a"), array) and np.array_equal(read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "short").write_bytes(idx_bytes(array)[:-1])
    with pytest.raises(ConfigError, match="short: an IDX file of shape"):
        read_idx(tmp_path / "short")
    (tmp_path / "text").write_bytes(b"hello world")
    with pytest.raises(ConfigError, match="text: not an IDX file"):
        read_idx(tmp_path / "text")


@pytest.mark.parametrize("gzipped", [True, False])
def test_mnist_from_a_folder(tmp_path, gzipped):
    digests = write_mnist(tmp_path / "mnist", gzipped=gzipped)
    data = MNISTDataModule(folder=str(tmp_path / "mnist"), sha256=digests if gzipped else None, val_size=0.2)
    data.prepare_data()
    data.setup()
    assert data.input_size == 28 and len(data.train_set) == 24 and len(data.val_set) == 6
    x, y = data.test_set.tensors
    assert x.shape == (10, 28, 28) and y.tolist() == list(range(10)) and 0 <= float(x.min()) and float(x.max()) <= 1
    images = read_idx(tmp_path / "mnist" / ("t10k-images-idx3-ubyte" + (".gz" if gzipped else "")))
    assert torch.allclose(x[3], torch.tensor(images[3] / 255.0, dtype=torch.float32))


def test_mnist_download_checked_and_a_bad_checksum_leaves_nothing(tmp_path):
    digests = write_mnist(tmp_path / "server")
    url = (tmp_path / "server").as_uri() + "/"
    wrong = {**digests, "t10k-labels-idx1-ubyte.gz": "0" * 64}
    target = tmp_path / "mnist"
    bad = MNISTDataModule(folder=str(target), url=url, sha256=wrong)
    with pytest.raises(ConfigError, match=r"^data\.init_args\.sha256\.t10k-labels-idx1-ubyte\.gz: .*nothing was kept"):
        bad.prepare_data()
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists() and not list(target.glob("*partial*"))
    good = MNISTDataModule(folder=str(target), url=url, sha256=digests)
    good.prepare_data()  # downloads what is missing
    good.setup()
    assert len(good.test_set) == 10
    (target / "train-labels-idx1-ubyte.gz").write_bytes(b"changed")  # a file that is there is checked too
    with pytest.raises(ConfigError, match=r"data\.init_args\.sha256\.train-labels-idx1-ubyte\.gz: .* has SHA-256"):
        MNISTDataModule(folder=str(target), url=url, sha256=digests).setup()


def test_mnist_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.init_args\.folder: no such folder"):
        MNISTDataModule(folder=str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"^data\.init_args\.sha256\.x: must be|^data\.init_args\.sha256\.x must be"):
        MNISTDataModule(folder=str(tmp_path), sha256={"x": "abc"})
    with pytest.raises(ConfigError, match=r"^data\.init_args\.sampling: original"):
        DigitsDataModule(sampling="original")


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ConfigError, match=r"lstm-pl\[images\]"):
        DigitsDataModule().setup()


def test_mnist_config_builds(tmp_path):
    """configs/mnist.yaml parses and builds its model (the data are not needed until setup)."""
    cli = CLI(args=["--config", str(ROOT / "configs" / "mnist.yaml"), f"--data.init_args.folder={tmp_path}",
                    "--data.init_args.url=null"], run=False)
    assert cli.model.net.rnn.input_size == 28 and cli.model.net.head.out_features == 10
