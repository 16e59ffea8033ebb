"""The fused CPU kernels of the hand-written LSTM cells: built once, loaded on first use.

``fused_lstm.cpp`` runs each time step's element-wise work of ``cells.LSTMRecurrence`` in one
loop, so that a step costs one matrix product and one pass over the state instead of a dozen
operator launches from Python. It is compiled with the machine's C++ compiler through
``torch.utils.cpp_extension`` (ninja), into ``~/.cache/lstm_pl/`` keyed by the torch version and the source;
``make setup`` builds it (``python -m lstm_pl.fused``) so that the first run does not wait.

Where it cannot be built (no compiler, no ninja) or ``LSTM_PL_FUSED=0`` is set, ``kernels()``
returns None after one line on the log, and the cells run their eager path: same equations, the
float64 tests hold for both.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

import torch

from .errors import first_line

NAME = "lstm_pl_fused"
SOURCE = Path(__file__).with_name("fused_lstm.cpp")
# -ffast-math on the compile line only (never the link line, where GCC would add crtfastmath.o and
# flush denormals process-wide): it lets GCC vectorise exp and tanh through glibc's libmvec.
# -fopenmp: at::parallel_for is inline OpenMP in torch's headers, serial in a module built without it.
# The module then needs libgomp.so.1, which resolves to the copy torch has already loaded (one pool).
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
LDFLAGS = ["-lm", "-fopenmp"]  # glibc's libm brings libmvec, the vector exp and tanh

log = logging.getLogger(__name__)


def build_directory() -> Path:
    """Where the compiled module lives: one folder per torch version, Python, source and flags."""
    root = Path(os.environ.get("LSTM_PL_CACHE", Path.home() / ".cache" / "lstm_pl"))
    recipe = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS + LDFLAGS).encode()).hexdigest()[:12]
    return root / f"torch-{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}" / recipe


def build(verbose: bool = False):
    """Import the compiled module, compiling it first where it is not there yet; raises whatever
    the build raises. (A built module is imported directly: torch's loader would spend seconds
    checking the compiler and ninja again.)"""
    folder = build_directory()
    library = folder / f"{NAME}.so"
    if not library.exists():
        from torch.utils.cpp_extension import load

        folder.mkdir(parents=True, exist_ok=True)
        log.warning("lstm_pl: compiling the fused LSTM kernels, once (about 30 s), into %s", folder)
        return load(name=NAME, sources=[str(SOURCE)], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                    build_directory=str(folder), verbose=verbose)
    spec = importlib.util.spec_from_file_location(NAME, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def disabled() -> bool:
    """True where the user turned the kernels off with ``LSTM_PL_FUSED=0``."""
    return os.environ.get("LSTM_PL_FUSED", "1") == "0"


@functools.cache
def kernels():
    """The compiled module, or None (with one line on the log saying why) where it is off or fails."""
    if disabled():
        return None
    try:
        return build()
    except Exception as error:  # noqa: BLE001 - any build failure means: run the eager path
        log.warning("lstm_pl: fused LSTM kernels unavailable (%s); the hand-written cells run eagerly", first_line(error))
        return None


def main() -> None:
    """``python -m lstm_pl.fused``: build the kernels now and say where they are."""
    module = kernels()
    if module is None:
        sys.exit("lstm_pl.fused: not built; the hand-written cells will run eagerly")
    print(f"lstm_pl.fused: built in {build_directory()}")


if __name__ == "__main__":
    main()
