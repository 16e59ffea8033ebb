"""The lab notebook, regenerated: every experiment over seeds, its tables and figures.

    python -m lstm_pl.results             # everything: docs/figures/*.png and RESULTS.md's tables
    python -m lstm_pl.results --quick     # fewer seeds, shorter budgets: runs/results_quick/
    python -m lstm_pl.results --only sine adding --jobs 2

Each training run is an ordinary CLI run, ``python -m lstm_pl fit`` with the config, the seed and
(for ``--quick``) a shorter budget, then ``python -m lstm_pl test`` on its last checkpoint; the
tables print that command beside each row. Runs go to ``<runs>/<run>/seed_<s>`` in their own
processes, ``--jobs`` at a time, one thread each. A run that finished before (its
``result.json`` is there) is read back, not rerun, and a run cut short goes on from its last
checkpoint (its CPU and wall seconds so far carried in the checkpoint and added), so an
interrupted regeneration picks up where it stopped. Seeds: 12 (the configs' own), 13, 14, ... A seed sets ``seed_everything`` (the
initial weights, dropout) and, for the in-memory tasks, the batch stream (``sampling_seed``); the
data themselves stay the original's (numpy seed 12) and the held-out test sets their own draw.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lstm_pl import runtime

from .markdown import write_results
from .parity_runs import parity_overlays
from .registry import EXPERIMENTS, EXTRA
from .report import report
from .runner import run_all


def main(argv: list[str] | None = None) -> None:
    """``python -m lstm_pl.results``: train what is missing, then write the sections and figures."""
    names = [e.name for e in EXPERIMENTS + EXTRA]
    parser = argparse.ArgumentParser(prog="python -m lstm_pl.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and shorter budgets (< 10 min), clearly labelled")
    parser.add_argument("--only", nargs="+", choices=names, help="these experiments (default: all but the language models' and adding_t600 and adding_t1000, which take from 20 minutes to several hours each)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2), one thread each")
    parser.add_argument("--runs", type=Path, help="runs folder (default runs/results, or runs/results_quick)")
    parser.add_argument("--no_parity", action="store_true", help="skip the parity overlays (they need TensorFlow)")
    args = parser.parse_args(argv)
    runtime.start()  # reading TensorBoard's event files needs no TensorFlow
    experiments = [e for e in EXPERIMENTS + EXTRA if e.name in args.only] if args.only else list(EXPERIMENTS)
    root = (args.runs or Path("runs") / ("results_quick" if args.quick else "results")).resolve()
    figures = root / "figures" if args.quick else Path("docs/figures")
    figures.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        runs = run_all(experiments, root, args.quick, args.jobs)
    except RuntimeError as error:
        sys.exit(f"lstm_pl.results: {error}")
    sections = report(experiments, runs, args.quick, figures, time.perf_counter() - start, args.jobs,
                      whole=not args.only)
    if not args.no_parity:
        sections["parity"] = parity_overlays(figures, root, args.quick)
    target = root / "RESULTS.md" if args.quick else Path("RESULTS.md")
    write_results(sections, target)
    print(f"lstm_pl.results: {len(runs)} runs, {(time.perf_counter() - start) / 60:.1f} min; wrote "
          f"{', '.join(sections)} into {target}, figures into {figures}/")
