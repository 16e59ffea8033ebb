"""What a process sets up before it trains, in one place: each entry point (``python -m lstm_pl``,
``lstm_pl.results``, ``lstm_pl.generate``, ``parity.compare``, ``parity.sensitivity``, the
``benchmarks`` and the processes they start) calls ``start()`` once; importing changes nothing,
and building a ``CLI`` changes no process setting.

- ``quiet()``: the output a user reads, without the notes that tell nothing;
- ``flush_denormals()``: denormal floats count as zero, as TensorFlow has them on the CPU;
- ``keep_freed_memory()``: large blocks from glibc's heap, freed memory kept for the next step.
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
import types
import warnings

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h: mallopt parameters
FREED_MEMORY_KEPT = 1 << 30  # bytes: the mmap and trim thresholds keep_freed_memory sets

# Lightning's INFO notes (rank_zero_info) that say nothing about this run, or what the summary says better.
NOTES = re.compile(r"💡 Tip:|GPU available:|TPU available:|HPU available:|`Trainer\(val_check_interval=\d+\)` was configured"
                   r"|`Trainer\.(fit|validate|test|predict)` stopped:")
# Warnings of the pinned versions that ask nothing of the user: a deprecation inside Lightning's own
# code, and what a resumed run or an evaluation of a run's checkpoint always meets.
WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"Checkpoint directory .* exists and is not empty",
            r"The dirpath has changed from")


class DropNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOTES.search(record.getMessage())


def quiet_lightning() -> None:
    """Drop Lightning's ``NOTES`` where they are made (a filter on its rank-zero loggers) and the
    ``WARNINGS`` by message."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotes) for f in logger.filters):
            logger.addFilter(DropNotes())
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def quiet() -> None:
    """The console a run shows:
    - TensorBoard's writer imports all of TensorFlow when it is installed (it is, for the parity
      harness), costing seconds and a screen of log lines; writing event files needs none of it,
      and the module TensorBoard's own no-TensorFlow build provides selects its stub instead;
    - tracing the model for TensorBoard's graph warns about every shape check it records;
    - "Seed set to N" would come before a config error's one line (the seed is in config.yaml);
    - Lightning's notes and warnings that tell the user nothing (``quiet_lightning``)."""
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    quiet_lightning()
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # log_graph's trace: the graph is fine
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)


def flush_denormals() -> None:
    """Denormal floats (below ~1e-38 in float32) count as zero, as TensorFlow has them on the CPU: a
    plain RNN's vanishing gradients otherwise make every step of adding_solve_rnn 4.3x slower."""
    torch.set_flush_denormal(True)


def keep_freed_memory() -> None:
    """Large tensors from the heap, and freed memory kept there for the next step (glibc's
    ``mallopt``; elsewhere nothing). By default glibc maps every block over 32 MB afresh and unmaps
    it when freed, so the language model's (100 × 50 × 2,610) logits and their gradient cost
    hundreds of thousands of page faults a step: a third of its step time spent in the kernel.
    (A long float64 run can fragment such a heap: ``parity.heap`` hands its free memory back.)"""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): its allocator has no such thresholds
        return
    libc.mallopt(M_MMAP_THRESHOLD, FREED_MEMORY_KEPT)
    libc.mallopt(M_TRIM_THRESHOLD, FREED_MEMORY_KEPT)


def start() -> None:
    """An entry point's set-up of its process, before it builds a run."""
    quiet()
    flush_denormals()
    keep_freed_memory()
