"""Images read as sequences, the classic way an LSTM classifies them (the original's third use of
the LSTM, image recognition): each row of pixels is one time step (``order: rows``), or each
pixel (``order: pixels``), and the class is read from the last hidden state
(``tasks.ClassificationTask``).

Two sources, both on ``ArrayDataModule`` (its training streams, validation split and resuming):
- ``DigitsDataModule``: the 8×8 handwritten digits that scikit-learn ships (1,797 images, no
  download; scikit-learn is the ``images`` extra), a held-out test share split off first;
- ``MNISTDataModule``: MNIST's 28×28 images from its four standard IDX files, read from a local
  folder or downloaded there by ``prepare_data`` and checked against their SHA-256; the official
  10,000 test images are the test set.
"""

from __future__ import annotations

import abc
import gzip
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from jsonargparse.typing import OpenUnitInterval

from .data import ArrayDataModule, Arrays, train_test_split_indices
from .errors import ConfigError
from .files import download, is_sha256, sha256_of

Order = Literal["rows", "pixels"]
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format; gzipped where the name ends in .gz) as a numpy array.

    Layout: two zero bytes, the element type (0x08 unsigned byte, ... 0x0E float64), the number
    of dimensions d; d big-endian uint32 sizes; the elements, row-major, big-endian."""
    path = Path(path)
    data = (gzip.decompress if path.suffix == ".gz" else bytes)(path.read_bytes())
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES:
        raise ConfigError(f"{path}: not an IDX file (its first bytes are {data[:4].hex() or 'missing'})")
    dims = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", count=dims, offset=4))
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = 4 + 4 * dims + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ConfigError(f"{path}: an IDX file of shape {shape} has {expected} bytes, this one {len(data)}")
    return np.frombuffer(data, dtype, offset=4 + 4 * dims).reshape(shape).astype(dtype.newbyteorder("="))


def as_sequences(images: np.ndarray, order: Order) -> np.ndarray:
    """Images (N, H, W) as sequences: ``rows``, (N, H, W), step t the t-th pixel row; ``pixels``,
    (N, H·W, 1), one pixel a step in reading order."""
    return images if order == "rows" else images.reshape(len(images), -1, 1)


class ImageSequenceDataModule(ArrayDataModule):
    """Images (scaled to [0, 1]) with their classes, as sequences (``order``); subclasses give
    ``images()``. ``input_size`` (pixels per step) and ``num_classes`` go to the model through the
    CLI's links. Training batches and the validation split are ``ArrayDataModule``'s."""

    num_classes = 10
    image_shape: tuple[int, int]

    def __init__(self, order: Order = "rows", **kwargs):
        super().__init__(**kwargs)
        if self.sampling == "original":
            self.original_stream()  # raises: images have no generating stream
        self.order = order

    @property
    def input_size(self) -> int:
        return self.image_shape[1] if self.order == "rows" else 1

    @abc.abstractmethod
    def images(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """((images, labels) to train and validate on, (images, labels) held out for test):
        images (N, H, W) float in [0, 1], labels (N,) int64."""

    def load(self) -> Arrays:
        (images, labels), (test_images, test_labels) = self.images()
        return Arrays(as_sequences(images, self.order), labels,
                      (as_sequences(test_images, self.order), test_labels))


class DigitsDataModule(ImageSequenceDataModule):
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes, 16 grey levels scaled to
    [0, 1]). ``test_size`` of them (default 20%, 360 images) are held out for ``test``, chosen by
    a permutation from ``RandomState(split_seed)``; of the rest, ``val_size`` validate."""

    image_shape = (8, 8)

    def __init__(self, test_size: OpenUnitInterval = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.test_size = test_size

    def images(self):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ConfigError("data.class_path: DigitsDataModule reads scikit-learn's digits; install the extra: "
                              "pip install 'lstm-pl[images]'") from None
        digits = load_digits()
        images, labels = digits.images / 16.0, digits.target.astype(np.int64)
        rest, test = train_test_split_indices(len(images), self.test_size, self.split_seed)
        return (images[rest], labels[rest]), (images[test], labels[test])


MNIST_FILES = {  # the four files as distributed, gzipped, and their SHA-256
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


class MNISTDataModule(ImageSequenceDataModule):
    """MNIST from its IDX files in ``folder``: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzipped (``.gz``, as distributed)
    or not. Where a file is missing and ``url`` (the folder's URL, ending in /) is given,
    ``prepare_data`` downloads the gzipped one into ``folder``, kept only if its SHA-256 is the one
    in ``sha256`` (default: the files as distributed); a file found there is checked too. The 60,000
    training images are split into training and validation (``val_size``); the 10,000 test images
    are the test set."""

    image_shape = (28, 28)

    def __init__(self, folder: str = ".cache/data/mnist", url: Optional[str] = None,
                 sha256: Optional[dict[str, str]] = None, **kwargs):
        super().__init__(**kwargs)
        self.folder, self.url = Path(folder), url
        self.sha256 = dict(MNIST_FILES if sha256 is None else sha256)
        for name, digest in self.sha256.items():
            if not is_sha256(digest):
                raise ConfigError(f"data.init_args.sha256.{name} must be 64 hex digits, got {digest!r}")
        if url is None and not self.folder.is_dir():
            raise ConfigError(f"data.init_args.folder: no such folder {folder} (or give data.init_args.url to download "
                              f"MNIST into it)")

    def file(self, stem: str) -> Path:
        """The file of ``stem`` (e.g. ``t10k-labels-idx1-ubyte``) in ``folder``: gzipped or not,
        whichever is there (the gzipped name if neither is)."""
        plain = self.folder / stem
        return plain if plain.is_file() and not (self.folder / f"{stem}.gz").is_file() else self.folder / f"{stem}.gz"

    def prepare_data(self) -> None:
        for name in MNIST_FILES:
            stem = name.removesuffix(".gz")
            if self.file(stem).is_file():
                continue
            if self.url is None:
                raise ConfigError(f"data.init_args.folder: {self.folder} has no {stem}[.gz] (or give data.init_args.url)")
            if name not in self.sha256:
                raise ConfigError(f"data.init_args.sha256: no SHA-256 for {name}, which would be downloaded")
            download(self.url + name, self.sha256[name], self.folder / name, "data.init_args.url",
                     f"data.init_args.sha256.{name}")
        super().prepare_data()

    def read(self, stem: str) -> np.ndarray:
        path = self.file(stem)
        if not path.is_file():
            raise ConfigError(f"data.init_args.folder: {self.folder} has no {stem}[.gz]")
        expected = self.sha256.get(path.name)
        if expected is not None and (found := sha256_of(path)) != expected.lower():
            raise ConfigError(f"data.init_args.sha256.{path.name}: {path} has SHA-256 {found}, expected {expected}")
        return read_idx(path)

    def images(self):
        split = []
        for part in ("train", "t10k"):
            images, labels = self.read(f"{part}-images-idx3-ubyte"), self.read(f"{part}-labels-idx1-ubyte")
            if images.ndim != 3 or images.shape[1:] != self.image_shape or labels.shape != images.shape[:1]:
                raise ConfigError(f"data.init_args.folder: {part} images of shape {images.shape} with labels of shape "
                                  f"{labels.shape}; MNIST's are (N, 28, 28) and (N,)")
            split.append((images.astype(np.float32) / 255.0, labels.astype(np.int64)))
        return tuple(split)
