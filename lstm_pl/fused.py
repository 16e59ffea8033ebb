"""The compiled CPU kernels of the LSTM layers: built once, loaded on first use.

``fused_lstm.cpp`` runs each time step of ``cells.LSTMRecurrence`` as one small matrix product
(a register-blocked loop of its own: MKL is slow at these shapes on AMD CPUs) and one pass over the
state, instead of a dozen operator launches from Python, and makes the products around the loop
(the input projection, the weight gradients). The hand-written cells run on it, and so does
``cell: lstm`` (``cells.LSTM``: ``nn.LSTM``'s weights) for each shape where it is measured faster
than oneDNN (``choose``, once per machine, remembered in ``choices.json`` beside the module;
``LSTM_PL_LSTM=onednn`` or ``fused`` fixes the choice). It is compiled with the machine's C++
compiler through ``torch.utils.cpp_extension`` (ninja), into ``~/.cache/lstm_pl/`` keyed by the
torch version and the source (``LSTM_PL_CACHE`` moves it); ``make setup`` builds it (``python -m
lstm_pl.fused``) so that the first run does not wait. A module whose bytes are not those its build
recorded (a build cut short, a full disk) is built again, never loaded.

Where it cannot be built (no compiler, no ninja) or ``LSTM_PL_FUSED=0`` is set, ``kernels()``
returns None after one line on the log: the hand-written cells run their eager path and ``cell:
lstm`` oneDNN's, the same equations; the float64 tests hold for every path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from .errors import ConfigError, first_line
from .files import atomic_write, sha256_of

NAME = "lstm_pl_fused"
SOURCE = Path(__file__).with_name("fused_lstm.cpp")
# -ffast-math on the compile line only (never the link line, where GCC would add crtfastmath.o and
# flush denormals process-wide): it lets GCC vectorise exp and tanh through glibc's libmvec.
# -fopenmp: at::parallel_for is inline OpenMP in torch's headers, serial in a module built without it.
# The module then needs libgomp.so.1, which resolves to the copy torch has already loaded (one pool).
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
LDFLAGS = ["-lm", "-fopenmp"]  # glibc's libm brings libmvec, the vector exp and tanh

log = logging.getLogger(__name__)


LAYOUT = "checksummed"  # how a build is published (``build``): part of the folder's key, so that
                        # modules published before the checksum are not taken for damaged ones


def build_directory() -> Path:
    """Where the compiled module lives: one folder per torch version, Python, source, flags and CPU
    (``-march=native``: a home folder shared by two kinds of CPU keeps a module for each)."""
    root = Path(os.environ.get("LSTM_PL_CACHE", Path.home() / ".cache" / "lstm_pl"))
    recipe = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS + LDFLAGS + [machine(), LAYOUT]).encode()).hexdigest()[:12]
    return root / f"torch-{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}" / recipe


def build(verbose: bool = False):
    """Import the compiled module, compiling it first where it is not there yet or is damaged;
    raises whatever the build raises. One process builds at a time (a lock file beside the module);
    one that waited loads the module just built."""
    library = build_directory() / f"{NAME}.so"
    if intact(library):
        return import_module(library)
    waiting = f"lstm_pl: waiting for another process's build of the fused LSTM kernels in {library.parent}"
    with locked(library, waiting=waiting) as held:
        if intact(library):
            return import_module(library)
        return compile_and_publish(library, verbose, clear_stale=held)


def checksum_path(library: Path) -> Path:
    return library.with_name(f"{library.name}.sha256")


def intact(library: Path) -> bool:
    """Whether ``library`` holds the bytes its build recorded (``<name>.sha256`` beside it). A module
    cut short would crash the process when loaded (a bus error, with nothing said): it is never loaded."""
    try:
        return sha256_of(library) == checksum_path(library).read_text().strip()
    except OSError:
        return False


def damage(library: Path) -> str | None:
    """What is wrong with a module that is there but not ``intact``; None where there is none."""
    if not library.exists():
        return None
    if not checksum_path(library).exists():
        return "its checksum is missing"
    return "not the bytes its build recorded: a build cut short, a full disk or an overwrite"


def import_module(library: Path):
    """The module at ``library``, imported directly: torch's loader would spend seconds checking the
    compiler and ninja again."""
    spec = importlib.util.spec_from_file_location(NAME, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_and_publish(library: Path, verbose: bool, clear_stale: bool):
    """Compile in a staging folder of this process's own, then publish: the checksum, then the
    module renamed into place, so that another process sees no module or a whole one; import it.
    ``clear_stale`` (only under the lock, when no other build can be running): first remove the
    staging folders of killed builds."""
    if clear_stale:
        for stale in library.parent.glob(".staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
    staging = library.parent / f".staging-{socket.gethostname()}-{os.getpid()}"
    staging.mkdir(parents=True)  # a read-only cache stops here, before a line says that a build starts
    try:
        why = damage(library)
        if why:
            log.warning("lstm_pl: the compiled kernels in %s are damaged (%s); compiling them again (about 30 s)",
                        library.parent, why)
        else:
            log.warning("lstm_pl: compiling the fused LSTM kernels, once (about 30 s), into %s", library.parent)
        compile_module(staging, verbose)
        built = staging / library.name
        with atomic_write(checksum_path(library)) as checksum:
            checksum.write_text(sha256_of(built) + "\n")
        os.replace(built, library)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return import_module(library)


BUILD = ("import sys; from torch.utils.cpp_extension import load; "
         "load(name=sys.argv[1], sources=[sys.argv[2]], extra_cflags=sys.argv[3].split(), "
         "extra_ldflags=sys.argv[4].split(), build_directory=sys.argv[5], verbose=sys.argv[6] == '1')")


def compile_module(folder: Path, verbose: bool) -> None:
    """torch's build of the module (ninja and the machine's C++ compiler) into ``folder``, in a
    process of its own: in this one, torch's loader would name a second build ``<name>_v1``."""
    command = [sys.executable, "-c", BUILD, NAME, str(SOURCE), " ".join(CFLAGS), " ".join(LDFLAGS), str(folder),
               "1" if verbose else "0"]
    result = subprocess.run(command, capture_output=not verbose, text=True)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or "").splitlines() if line.strip()]
        # the compiler's first error where there is one, else the exception that ended the build
        cause = next((line for line in lines if "error:" in line), lines[-1] if lines else "no output")
        raise RuntimeError(f"the build failed (exit {result.returncode}): {cause}")


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


LSTM_SETTING = "LSTM_PL_LSTM"
LSTM_CHOICES = ("auto", "onednn", "fused")


def lstm_setting() -> str:
    """Which kernels ``cell: lstm`` runs on, from ``LSTM_PL_LSTM``: ``auto`` (the default: the faster
    for each shape, measured once per machine), ``onednn`` (always ``nn.LSTM``'s own) or ``fused``
    (always the compiled ones, where they build)."""
    value = os.environ.get(LSTM_SETTING, "auto")
    if value not in LSTM_CHOICES:
        raise ConfigError(f"{LSTM_SETTING}={value!r}: choose one of {', '.join(LSTM_CHOICES)}")
    return value


@functools.cache
def machine() -> str:
    """The CPU: its model name and a digest of its instruction-set flags (a VM may name only the
    vendor), as the compiled module and the measured choices are keyed by it."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = value.strip()
                if name and flags:
                    break
    except OSError:
        pass
    return f"{name} ({hashlib.sha256(flags.encode()).hexdigest()[:8]})" if flags else name


def seconds(run: Callable[[], object]) -> float:
    """The wall time of one call."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def choose(key: str, contenders: dict[str, Callable[[], object]], prefer: str, margin: float = 0.95,
           repeats: int = 5) -> str:
    """The contender to run for ``key``, measured once per machine and remembered in
    ``choices.json`` beside the compiled module: ``prefer`` where its median time is at most
    ``margin`` times the other's (a near tie keeps the other, so that noise does not flip a choice
    back and forth), else the other. The contenders are timed interleaved, after two warm-up calls each."""
    remembered_choice = remembered(key)
    if remembered_choice is not None:
        return remembered_choice
    for run in contenders.values():
        run(), run()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            times[name].append(seconds(run))
    medians = {name: statistics.median(values) for name, values in times.items()}
    other = next(name for name in contenders if name != prefer)
    choice = prefer if medians[prefer] <= margin * medians[other] else other
    path = choices_path()
    with locked(path):  # another process may have measured the same key meanwhile: its choice stands
        choices = read_choices(path)
        choice = choices.setdefault(choice_key(key), choice)
        write_choices(path, choices)
    remembered_choices(path).update(choices)
    log.info("lstm_pl: %s runs on %s (%s; measured once, remembered in %s)", key, choice,
             ", ".join(f"{name} {median * 1e3:.2f} ms" for name, median in medians.items()), path)
    return choice


@contextlib.contextmanager
def locked(path: Path, waiting: str | None = None):
    """An exclusive lock on ``path``'s lock file while the block runs; yields whether it is held. Not
    where none can be taken (not POSIX, a read-only cache without the lock file, a file system
    without locks): the block runs unlocked. ``waiting``: a line logged while another process holds it."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    lock_file = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        try:
            descriptor = os.open(lock_file, os.O_RDONLY)  # a read-only cache: flock works on a file opened so
        except OSError:
            yield False
            return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                log.warning(waiting)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        held = True
    except OSError:  # no locks here (ENOLCK)
        held = False
    try:
        yield held
    finally:
        if held:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def choices_path() -> Path:
    """Where the measured choices are remembered: beside the compiled module (so a new kernel
    source is measured afresh)."""
    return build_directory() / "choices.json"


def choice_key(key: str) -> str:
    return f"{machine()} | {torch.get_num_threads()} threads | {key}"


@functools.cache
def remembered_choices(path: Path) -> dict[str, str]:
    """``path``'s choices as this process first read them, plus those it made since."""
    return read_choices(path)


def remembered(key: str) -> str | None:
    """The choice made for ``key`` on this machine, or None where none was measured yet."""
    return remembered_choices(choices_path()).get(choice_key(key))


def read_choices(path: Path) -> dict[str, str]:
    """The remembered choices; none where the file is missing or unreadable (they are measured again)."""
    try:
        choices = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return choices if isinstance(choices, dict) else {}


def write_choices(path: Path, choices: dict[str, str]) -> None:
    """Written whole to a temporary file and renamed over the old one; a failure costs a later
    measurement, never the run."""
    try:
        with atomic_write(path) as temporary:
            temporary.write_text(json.dumps(choices, indent=1, sort_keys=True) + "\n")
    except OSError as error:
        log.warning("lstm_pl: could not remember the kernel choices in %s (%s)", path, first_line(error))


def main() -> None:
    """``python -m lstm_pl.fused``: build the kernels now and say where they are."""
    module = kernels()
    if module is None:
        sys.exit("lstm_pl.fused: not built; the hand-written cells will run eagerly")
    print(f"lstm_pl.fused: built in {build_directory()}")


if __name__ == "__main__":
    main()
