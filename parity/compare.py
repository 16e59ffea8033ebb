"""``python -m parity.compare TASK``: train one lstm_pl setup in PyTorch Lightning and again in
TensorFlow, from the same initial weights, on the same batches, with the same optimizer and
clipping, and compare the two loss trajectories step by step.

    python -m parity.compare sine                    # configs/sine.yaml, float32, the config's 500 steps
    python -m parity.compare all --dtype float64     # every config under configs/, one table
    python -m parity.compare --config my.yaml --steps 50 --tolerance 1e-4 --model.init_args.hidden_size=20

Extra ``--model.…``, ``--data.…``, ``--trainer.…`` arguments override the config, as with
``python -m lstm_pl``. Each comparison writes, under one run folder (``parity_runs/version_<n>/``, outside ``runs/``
unless ``--out``), ``<task>/report.json`` (both trajectories, both final validation losses, the
differences, the verdict), ``<task>/overlay.png``, and TensorBoard scalars for ``pytorch``,
``tensorflow`` and ``difference``. Exit status: 0 if every comparison is within tolerance, 1 if
one is not, 2 if a config cannot be compared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from lstm_pl import runtime
from lstm_pl.errors import cause
from lstm_pl.errors import ConfigError
from lstm_pl.files import atomic_write

from . import checks, heap, pytorch_side, record

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# Largest relative difference of the loss allowed at any step, and of the final validation loss.
# float64: the target. float32: about 7x the largest difference of any passing float32 run (6.7e-4,
# adding_solve_rnn), and below the 6.3e-3 a planted peephole backward bug reaches (RESULTS.md,
# "The float32 tolerance"; adding_rnn and lstm_cec are chaotic in float32 and compared in float64).
TOLERANCE = {"float64": 1e-6, "float32": 5e-3}
DEFAULT_STEPS = pytorch_side.DEFAULT_STEPS


def relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|b - a| / |a|, the reference ``a`` being PyTorch's loss (inf where a is 0 and b is not)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a == b, 0.0, np.abs(b - a) / np.abs(a))


def compare_trajectories(pytorch: np.ndarray, tensorflow: np.ndarray, val_pytorch: float, val_tensorflow: float,
                         tolerance: float) -> dict:
    """The differences and the verdict. Steps count from 1 (step k: the loss on the k-th batch,
    before its update); a NaN difference counts as infinite, so outside any tolerance."""
    if len(tensorflow) != len(pytorch):
        raise ValueError(f"{len(pytorch)} PyTorch steps but {len(tensorflow)} TensorFlow steps")
    nan_to_inf = lambda d: np.where(np.isnan(d), np.inf, d)
    absolute = nan_to_inf(np.abs(tensorflow - pytorch))
    rel = nan_to_inf(relative(pytorch, tensorflow))
    over = np.flatnonzero(rel > tolerance)
    val_rel = float(nan_to_inf(relative(np.array([val_pytorch]), np.array([val_tensorflow])))[0])
    return dict(
        max_abs_diff=float(absolute.max()), max_abs_step=int(absolute.argmax()) + 1,
        max_rel_diff=float(rel.max()), max_rel_step=int(rel.argmax()) + 1,
        first_step_over_tolerance=int(over[0]) + 1 if len(over) else None,
        val_abs_diff=abs(val_tensorflow - val_pytorch), val_rel_diff=val_rel,
        passed=bool(len(over) == 0 and val_rel <= tolerance),
    )


def plot_overlay(report: dict, path: Path) -> None:
    """Both loss curves (log scale), and their absolute and relative difference (log scale)."""
    from matplotlib.figure import Figure

    pt, tf = np.array(report["pytorch"]["losses"]), np.array(report["tensorflow"]["losses"])
    steps = np.arange(1, len(pt) + 1)
    figure = Figure(figsize=(8, 6))
    figure.subplots_adjust(left=0.12, right=0.97, top=0.94, bottom=0.09, hspace=0.08)  # tight_layout's, fixed: half the time
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[3, 2]))
    top.plot(steps, pt, lw=1.6, color="tab:orange", label=f"PyTorch (val {report['pytorch']['val_loss']:.6g})")
    top.plot(steps, tf, lw=1.0, ls="--", color="tab:blue", label=f"TensorFlow (val {report['tensorflow']['val_loss']:.6g})")
    top.set(yscale="log", ylabel="training loss",
            title=f"{report['task']}: PyTorch vs TensorFlow, {report['dtype']}, {len(pt)} steps")
    top.legend()
    show = lambda d: np.where(d > 0, d, np.nan)  # an exact match (0) has no place on a log scale
    bottom.plot(steps, show(np.abs(tf - pt)), lw=0.8, color="0.3", label="|TF - PT|")
    bottom.plot(steps, show(relative(pt, tf)), lw=0.8, color="tab:red", label="|TF - PT| / PT")
    bottom.axhline(report["tolerance"], color="tab:red", ls=":", lw=1, label=f"tolerance {report['tolerance']:g}")
    bottom.set(yscale="log", xlabel="step", ylabel="difference")
    bottom.legend(fontsize=8, loc="upper left")
    with atomic_write(path) as partial:
        figure.savefig(partial, format="png", dpi=110)


def write_tensorboard(report: dict, folder: Path) -> None:
    """Scalars ``train/loss`` (per step) and ``val/loss`` (at the last step) under ``pytorch/``
    and ``tensorflow/`` (one chart, two runs, in TensorBoard), and the differences under ``difference/``."""
    from torch.utils.tensorboard import SummaryWriter

    pt, tf = np.array(report["pytorch"]["losses"]), np.array(report["tensorflow"]["losses"])
    for side, losses in (("pytorch", pt), ("tensorflow", tf)):
        with SummaryWriter(str(folder / side)) as writer:
            for step, loss in enumerate(losses, 1):
                writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("val/loss", report[side]["val_loss"], len(losses))
    with SummaryWriter(str(folder / "difference")) as writer:
        for step, (a, r) in enumerate(zip(np.abs(tf - pt), relative(pt, tf)), 1):
            writer.add_scalar("parity/abs_diff", a, step)
            writer.add_scalar("parity/rel_diff", r, step)


def verdict(report: dict) -> str:
    """The one line printed per comparison."""
    follows = ", TensorFlow made to follow PyTorch's Adam" if report["tensorflow_follows_pytorch_adam"] else ""
    head = f"{report['task']} [{report['tensorflow_backend']}, {report['dtype']}, {report['steps']} steps{follows}]"
    tail = (f"val loss {report['pytorch']['val_loss']:.6g} vs {report['tensorflow']['val_loss']:.6g} "
            f"(rel {report['val_rel_diff']:.1e}); {report['seconds']:.0f} s; {report['folder']}/report.json")
    worst = f"max rel diff {report['max_rel_diff']:.1e} (step {report['max_rel_step']})"
    after = report.get("after_update")
    if after is not None:
        worst += f", after-update curve {after['max_rel_diff']:.1e} over {len(after['steps'])} steps"
    failed_checks = [f"{name}: {result}" for name, result in report["checks"].items() if not result.startswith(checks.OK)]
    if failed_checks:
        return f"{head}: FAIL, {failed_checks[0]}; {worst}; {tail}"
    if report["passed"]:
        return f"{head}: PASS, {worst} <= {report['tolerance']:g}; {tail}"
    first = report["first_step_over_tolerance"]
    where = f"first at step {first}, " if first is not None else "only the validation loss, "
    if after is not None and not after["passed"] and first is None and report["val_rel_diff"] <= report["tolerance"]:
        where = f"in the after-update curve, first at step {after['steps'][after['first_step_over_tolerance'] - 1]}, "
    return f"{head}: FAIL, rel diff over {report['tolerance']:g} {where}{worst}; {tail}"


def compare(config: Path, dtype: str, steps: int | None, tolerance: float, folder: Path, overrides: list[str] = (),
            threads: int = 1, backend: str = "keras", follow_torch_adam: bool = False) -> dict:
    """Run ``config`` in PyTorch (recorded), check what it started from and trained on, train the
    TensorFlow ``backend`` on its own data from the same weights, compare, write the report files
    into ``folder``; returns the report."""
    start = time.perf_counter()
    if folder.exists():
        raise ConfigError(f"--out: {folder} exists already; choose another run folder")
    try:
        recording = pytorch_side.record(str(config), dtype, steps, folder / "pytorch", list(overrides), threads=threads,
                                        backend=backend, follow_torch_adam=follow_torch_adam)
        inputs = checks.training_inputs(recording, dtype)
        if config.resolve().parent == CONFIGS and config.stem in record.RUNS:  # an original run: held to its record
            inputs.checks["original_run"] = record.check(config.stem, recording.config, list(overrides),
                                                         [len(x) for x, _ in recording.batches], len(recording.losses),
                                                         recording.planned_steps)
        heap.release.trim()  # what the PyTorch side freed, before TensorFlow's allocations (parity/heap.py)
        if backend == "tf1":
            from . import tf1_side as side  # TensorFlow's import takes seconds: only when comparing
        else:
            from . import tensorflow_side as side
        replay = side.train(recording, dtype, inputs)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused or interrupted comparison leaves nothing behind
        raise
    pt, tf = np.array(recording.losses), np.asarray(replay["losses"])
    trajectories = compare_trajectories(pt, tf, recording.val_loss, replay["val_loss"], tolerance)
    after = None
    if recording.after_update_steps and "losses_after_update" in replay:  # the original's own curve, both sides
        at = np.array(recording.after_update_steps) - 1
        pt_after, tf_after = np.array(recording.losses_after_update), np.asarray(replay["losses_after_update"])[at]
        after = dict(steps=recording.after_update_steps, pytorch=pt_after.tolist(), tensorflow=tf_after.tolist(),
                     **compare_trajectories(pt_after, tf_after, recording.val_loss, replay["val_loss"], tolerance))
        after["passed"] = bool(after["first_step_over_tolerance"] is None)
    report = dict(
        task=config.stem, config=str(config), overrides=list(overrides), dtype=dtype, steps=len(pt),
        epochs=len(set(recording.epochs)), tolerance=tolerance, folder=str(folder),
        tensorflow_backend=backend, tensorflow_follows_pytorch_adam=recording.optimizer["form"] == "torch",
        spec=recording.spec, data=recording.data, optimizer=recording.optimizer, clip=recording.clip,
        checks=inputs.checks, **trajectories,
        pytorch=dict(losses=pt.tolist(), val_loss=recording.val_loss, seconds=recording.seconds),
        tensorflow=dict(losses=tf.tolist(), val_loss=replay["val_loss"], seconds=replay["seconds"]),
    )
    report["after_update"] = after
    report["passed"] = trajectories["passed"] and checks.passed(inputs.checks) and (after is None or after["passed"])
    report["seconds"] = time.perf_counter() - start
    report["verdict"] = verdict(report)
    write_tensorboard(report, folder)
    plot_overlay(report, folder / "overlay.png")
    with atomic_write(folder / "report.json") as partial:
        partial.write_text(json.dumps(report, indent=1) + "\n")
    return report


def table(reports: list[dict]) -> str:
    """The ``all`` summary as a Markdown table."""
    lines = ["| task | backend, dtype | steps | max abs diff | max rel diff | after-update max rel diff | val rel diff | "
             "first step over | time (s) | verdict |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in reports:
        first = "-" if r["first_step_over_tolerance"] is None else str(r["first_step_over_tolerance"])
        follows = ", follows PyTorch's Adam" if r["tensorflow_follows_pytorch_adam"] else ""
        after = "-" if r.get("after_update") is None else f"{r['after_update']['max_rel_diff']:.1e}"
        lines.append(f"| {r['task']} | {r['tensorflow_backend']}, {r['dtype']}{follows} | {r['steps']} | "
                     f"{r['max_abs_diff']:.1e} | {r['max_rel_diff']:.1e} | {after} | {r['val_rel_diff']:.1e} | {first} | "
                     f"{r['seconds']:.0f} | {'PASS' if r['passed'] else 'FAIL'} (tol {r['tolerance']:g}) |")
    return "\n".join(lines)


def next_version(parent: Path) -> Path:
    """``parent/version_<n>``, n one past the highest there."""
    taken = [int(p.name.split("_", 1)[1]) for p in parent.glob("version_*") if p.name.split("_", 1)[1].isdigit()]
    return parent / f"version_{max(taken, default=-1) + 1}"


def step_count(text: str) -> int:
    """``--steps``: a positive number of optimizer steps, or ``all`` (0: the config's whole budget)."""
    if text == "all":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, or all; got {text}")
    return int(text)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m parity.compare", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", nargs="?", help="a config's name under configs/ (sine, adding, ...), or all")
    parser.add_argument("--config", type=Path, help="a config file, instead of TASK")
    parser.add_argument("--dtype", choices=sorted(TOLERANCE), default="float32")
    parser.add_argument("--steps", type=step_count,
                        help="optimizer steps, or all: the config's whole budget (default: the config's budget, at "
                        f"most {DEFAULT_STEPS['regression']} for the regression tasks and "
                        f"{DEFAULT_STEPS['language_model']} for the language models)")
    parser.add_argument("--tolerance", type=float, help="largest relative loss difference allowed "
                        f"(default: {TOLERANCE['float32']:g} in float32, {TOLERANCE['float64']:g} in float64)")
    parser.add_argument("--out", type=Path, help="run folder (default: parity_runs/version_<n>, outside the training runs)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (default 1: the small "
                        "models run fastest on one, and more spin against other jobs on a busy machine)")
    parser.add_argument("--tensorflow", choices=pytorch_side.BACKENDS, default="keras",
                        help="keras: Keras 3 layers, every cell and task (default); tf1: the original programs in "
                        "tf.compat.v1 graph mode (LSTMCell, BasicRNNCell, AdamOptimizer; sine and adding)")
    parser.add_argument("--tensorflow-follows-pytorch-adam", action="store_true", dest="follow_torch_adam",
                        help="compare configs that choose torch.optim.Adam by making TensorFlow apply PyTorch's "
                        "update (TorchAdam), which TensorFlow does not have; said in every verdict and report")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith(("--model.", "--data.", "--trainer.", "--averaging.", "--seed_everything"))]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if (args.task is None) == (args.config is None):
        parser.error("give a TASK (a config's name, or all) or --config PATH, not both")
    if args.tolerance is not None and not args.tolerance > 0:
        parser.error(f"--tolerance must be positive, got {args.tolerance}")
    return args, overrides


def configs_for(args: argparse.Namespace) -> list[Path]:
    tasks = sorted(p for p in CONFIGS.glob("*.yaml") if p.stem != "base")  # base.yaml: the defaults every task starts from
    if args.config is not None:
        paths = [args.config]
    elif args.task == "all":
        paths = tasks
    else:
        paths = [CONFIGS / f"{args.task}.yaml"]
    for path in paths:
        if not path.is_file() or (args.config is None and path not in tasks):
            known = ", ".join(p.stem for p in tasks)
            what = "no config" if not path.is_file() else "not a task but the defaults every task's config starts from:"
            raise ConfigError(f"{what} {path} (tasks: {known}, or all)")
    return paths


def quiet() -> None:
    """Keep the output to the verdicts: no Lightning banners, no third-party deprecation notes, no
    TensorFlow C++ log lines (read when TensorFlow is first imported, so set here, before), and
    Keras on its TensorFlow backend."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    runtime.start()
    quiet()
    tolerance = args.tolerance if args.tolerance is not None else TOLERANCE[args.dtype]
    try:
        paths = configs_for(args)
    except ConfigError as error:
        print(f"parity: error: {error}", file=sys.stderr)
        return 2
    run = args.out if args.out is not None else next_version(Path("parity_runs"))
    existed = run.exists()
    reports, refused, skipped = [], [], []
    for path in paths:
        try:
            report = compare(path, args.dtype, args.steps, tolerance, run / path.stem, overrides, args.threads,
                             args.tensorflow, args.follow_torch_adam)
        except Exception as error:
            refusal = cause(error)
            if refusal is None:
                raise
            if len(paths) > 1 and isinstance(refusal, pytorch_side.NotComparable):
                print(f"{path.stem}: skipped, {refusal}", flush=True)  # under all: not a failure, said
                skipped.append((path.stem, str(refusal)))
                continue
            print(f"parity: error: {path.stem}: {refusal}", file=sys.stderr, flush=True)
            refused.append(path.stem)
            continue
        print(report["verdict"], flush=True)
        reports.append(report)
    if len(paths) > 1 and reports:
        summary = (table(reports)
                   + "".join(f"\n| {name} | refused: see the error above | | | | | | | | |" for name in refused)
                   + "".join(f"\n| {name} | skipped: {why.split(';')[0]} | | | | | | | | |" for name, why in skipped))
        with atomic_write(run / "summary.md") as partial:
            partial.write_text(summary + "\n")
        print(summary)
    if not existed and run.is_dir() and not any(run.iterdir()):
        run.rmdir()  # every comparison was refused: leave nothing behind
    if refused:
        return 2
    return 0 if all(r["passed"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
