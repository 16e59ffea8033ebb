"""The heap memory a comparison frees, handed back to the system as it runs.

Every lstm_pl process raises glibc's mmap and trim thresholds to 1 GB (``lstm_pl.runtime.keep_freed_memory``,
called by each entry point's ``runtime.start()``, the harness's included),
so every block comes from the heap and freed memory stays there for the next step. Depending on
where the address layout places the heap (ASLR: the same run differs from process to process),
a long float64 run at T=1000 fragments it: a step's large blocks no longer fit the holes the
steps before left, so the heap grows while its free memory stays resident. Measured on
``adding_t1000`` (float64, PyTorch side, ASLR off so that the layout repeats): 39 MB a step, 6.6 GB
resident after 150 steps, of which 0.8 GB live; a 100-step comparison's peak 7.3 GB, the
1,000-step one killed at 23 GB. ``release`` hands the free memory back (``malloc_trim``) once the
heap has grown by ``GROWTH`` bytes: a heap that reuses its memory is left alone, a fragmenting
one costs at most that much more, and no computation changes."""

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
