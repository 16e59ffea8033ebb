"""The heap memory a comparison frees, handed back to the system as it runs.

Every lstm_pl run raises glibc's mmap and trim thresholds to 1 GB (``lstm_pl.cli.keep_freed_memory``,
applied when the harness builds its run through the CLI), so every block comes from the heap and
freed memory stays there for the next step. Over a long float64 run at T=1000 that heap fragments:
each step's large blocks (the sequence's gate pre-activations, 100 MB, its outputs, their
gradients) no longer fit the holes the step before left, so the heap grows by them while its
free memory stays resident, from 12 to 75 MB a step in the same run measured several times
(``adding_t1000``, 40 steps: 1.4-3.9 GB resident after training; 7.1 GB after 100 steps, the
1,000-step comparison killed at 23 GB), on either side of a comparison and in validation.
``release`` returns that free memory (``malloc_trim``) once it passes ``LIMIT``: what a step
reuses stays, a fragmented heap no longer counts, and no computation changes."""

from __future__ import annotations

import ctypes
import sys

GROWTH = 512 << 20  # bytes the heap may grow by before its free memory is handed back


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33 and later)."""

    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def glibc() -> ctypes.CDLL | None:
    """glibc with ``mallinfo2`` and ``malloc_trim``; None elsewhere (not Linux, musl, an older glibc)."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


LIBC = glibc()


def heap_size() -> int:
    """The memory the heap holds from the system (every arena), in bytes; 0 where it cannot be read."""
    return LIBC.mallinfo2().arena if LIBC is not None else 0


class Releaser:
    """``release()``: hand the heap's free memory back to the system (``malloc_trim``) once the
    heap has grown by more than ``growth`` bytes since the last time, or since its smallest; a heap
    that reuses its memory step after step does not grow and is left alone. ``trim()``: now."""

    def __init__(self, growth: int = GROWTH):
        self.growth, self.low = growth, None  # low: the heap's size at the last trim, or its smallest since

    def __call__(self) -> bool:
        """Trim if the heap has grown by more than ``growth``; returns whether it did."""
        if LIBC is None:
            return False
        size = heap_size()
        if self.low is None or size < self.low:
            self.low = size
        if size - self.low <= self.growth:
            return False
        self.trim()
        return True

    def trim(self) -> None:
        if LIBC is not None:
            LIBC.malloc_trim(0)
            self.low = heap_size()


release = Releaser()
