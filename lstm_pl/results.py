"""The lab notebook, regenerated: every experiment over seeds, its tables and figures.

    python -m lstm_pl.results             # everything: docs/figures/*.png and RESULTS.md's tables
    python -m lstm_pl.results --quick     # fewer seeds, shorter budgets: runs/results_quick/
    python -m lstm_pl.results --only sine adding --jobs 2

Each training run is an ordinary CLI run, ``python -m lstm_pl fit`` with the config, the seed and
(for ``--quick``) a shorter budget, then ``python -m lstm_pl test`` on its last checkpoint; the
tables print that command beside each row. Runs go to ``<runs>/<run>/seed_<s>`` in their own
processes, ``--jobs`` at a time, one thread each. A run that finished before (its
``result.json`` is there) is read back, not rerun, so an interrupted regeneration picks up where
it stopped. Seeds: 12 (the configs' own), 13, 14, ... A seed sets ``seed_everything`` (the
initial weights, dropout) and, for the in-memory tasks, the batch stream (``sampling_seed``); the
data themselves stay the original's (numpy seed 12) and the held-out test sets their own draw.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from .cli import quiet_start
from .data import adding_problem, noisy_sine
from .files import atomic_write

FIRST_SEED = 12
BEGIN, END = "<!-- results: begin (python -m lstm_pl.results) -->", "<!-- results: end -->"


@dataclass(frozen=True)
class Arm:
    """One configuration trained over seeds: ``name`` is its runs folder, unique across experiments
    (an arm shared by two experiments trains once)."""

    name: str
    label: str
    config: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Column:
    """A table column: a value per run (None where it does not apply), summarised over seeds."""

    header: str
    value: Callable[["Run"], float | None]
    fmt: str = "{:.4f}"
    count: bool = False  # a yes/no per run: reported as "k of n seeds", not median and range


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    arms: tuple[Arm, ...]
    columns: tuple[Column, ...]
    curve: str                      # the scalar drawn against the step, median and range over seeds
    seeds: int                      # the full run's; --quick runs quick_seeds
    quick_seeds: int = 1
    quick: tuple[str, ...] = ()     # the shorter budget of --quick
    array_data: bool = True         # sine and adding: the seed also sets the batch stream
    log_y: bool = True
    figures: tuple[str, ...] = ()   # each arm's first-seed figure copied beside the curves
    note: str = ""


@dataclass
class Run:
    """One finished run, read back from its folder: ``result.json`` and the TensorBoard events."""

    folder: Path
    result: dict
    _events: dict = field(default_factory=dict)

    def scalars(self, tag: str, stage: str = "fit") -> list[tuple[int, float]]:
        if stage not in self._events:
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            events = EventAccumulator(str(self.folder if stage == "fit" else self.folder.with_name(self.folder.name + "_test")))
            events.Reload()
            self._events[stage] = events
        events = self._events[stage]
        if tag not in events.Tags()["scalars"]:
            return []
        return [(e.step, e.value) for e in events.Scalars(tag)]

    def last(self, tag: str, stage: str = "fit") -> float | None:
        values = self.scalars(tag, stage)
        return values[-1][1] if values else None

    def test(self, tag: str) -> float | None:
        return self.last(tag, "test")


# ---- the experiments ----

steps = Column("steps", lambda run: run.result["steps"], "{:,.0f}")
minutes = Column("minutes per run", lambda run: run.result["seconds"] / 60, "{:.1f}")
test_mse = Column("test MSE", lambda run: run.test("test/loss"), "{:.5f}")
within = Column("test \\|error\\| < 0.04", lambda run: run.test("test/within_tolerance"), "{:.1%}")
learned = Column("test MSE < 0.01", lambda run: float(run.test("test/loss") < 0.01), count=True)


def adding_arm(name: str, label: str, config: str = "configs/adding_solve.yaml", *overrides: str) -> Arm:
    return Arm(name, label, config, tuple(overrides))


SOLVE_LSTM = adding_arm("adding_solve", "LSTM (chrono, batch 32, clip 1)")
SOLVE_RNN = adding_arm("adding_solve_rnn", "plain RNN", "configs/adding_solve_rnn.yaml")

EXPERIMENTS = (
    Experiment(
        "sine", "Sine: LSTM against a plain RNN, hidden 50 and 20 (the original's four runs)",
        (Arm("sine_lstm50", "LSTM 50", "configs/sine.yaml"), Arm("sine_rnn50", "RNN 50", "configs/sine_rnn.yaml"),
         Arm("sine_lstm20", "LSTM 20", "configs/sine_20.yaml"), Arm("sine_rnn20", "RNN 20", "configs/sine_rnn_20.yaml")),
        (Column("val MSE", lambda run: run.last("val/loss"), "{:.5f}"),
         Column("test MSE (fresh noise)", lambda run: run.test("test/loss"), "{:.5f}"),
         Column("closed-loop MSE vs clean wave", lambda run: run.last("val/closed_loop_mse"), "{:.4f}"), minutes),
        curve="train/loss", seeds=5, quick_seeds=2, quick=("--trainer.max_steps=200",), figures=("waveform",),
        note="500 steps of batch 10 (the original's budget); the closed-loop MSE feeds the model its own "
             "predictions from the first window on and compares them with the noise-free sine."),
    Experiment(
        "adding", "Adding problem, the original's budget (500 steps of 10): LSTM against a plain RNN",
        (Arm("adding_lstm", "LSTM 100", "configs/adding.yaml"), Arm("adding_rnn", "RNN 100", "configs/adding_rnn.yaml")),
        (test_mse, Column("baseline MSE", lambda run: run.test("test/baseline_mse"), "{:.4f}"), within, minutes),
        curve="train/loss", seeds=5, quick_seeds=2, figures=("predictions",),
        note="Far too short to learn the task: both stay at the baseline of always answering 1.0."),
    Experiment(
        "adding_solve", "Adding problem, solved: the solving budget (at most 8,000 steps of 32)",
        (SOLVE_LSTM, SOLVE_RNN), (steps, test_mse, within, learned, minutes),
        curve="val/loss", seeds=3, quick=("--trainer.max_steps=600",), figures=("predictions",),
        note="Early stopping watches validation (MSE < 0.01, checked every 250 steps); the columns are the "
             "held-out test set (10,000 fresh sequences, `test_seed: 1000`), scored on the last weights."),
    Experiment(
        "adding_cells", "Cell ablation on the solving budget",
        (SOLVE_LSTM, adding_arm("adding_solve_peephole", "LSTM + peepholes (chrono)", "configs/adding_solve.yaml",
                                "--model.init_args.net.cell=lstm_peephole"),
         adding_arm("adding_solve_cec", "1997 LSTM, no forget gate (no chrono: it sets forget biases)",
                    "configs/adding_solve_fb1.yaml", "--model.init_args.net.cell=lstm_cec"), SOLVE_RNN),
        (steps, test_mse, within, learned, minutes),
        curve="val/loss", seeds=3, quick=("--trainer.max_steps=600",)),
    Experiment(
        "adding_controlled", "What the solving recipe owes to each change: one setting varied at a time",
        (SOLVE_LSTM,
         adding_arm("adding_solve_fb1", "forget bias 1.0 instead of chrono", "configs/adding_solve_fb1.yaml"),
         adding_arm("adding_solve_b10", "batch 10 instead of 32", "configs/adding_solve.yaml",
                    "--data.init_args.batch_size=10"),
         adding_arm("adding_solve_noclip", "no gradient clipping", "configs/adding_solve.yaml",
                    "--trainer.gradient_clip_val=null")),
        (steps, test_mse, within, learned, minutes),
        curve="val/loss", seeds=3, quick=("--trainer.max_steps=600",)),
    Experiment(
        "shakespeare", "Shakespeare: one LSTM layer against three stacked (the cookbook's recipe)",
        (Arm("shakespeare_1", "1 layer", "configs/shakespeare.yaml"),
         Arm("shakespeare_3", "3 layers", "configs/shakespeare_multi.yaml")),
        (Column("val perplexity", lambda run: run.last("val/perplexity"), "{:.1f}"),
         Column("test perplexity", lambda run: run.test("test/perplexity"), "{:.1f}"), minutes),
        curve="val/perplexity", seeds=3, quick=("--trainer.max_epochs=2",), array_data=False, log_y=False,
        figures=("loss_curves",)),
)
EXTRA = (  # not part of the default set: run with --only
    Experiment(
        "adding_t1000", "Adding problem at T=1000 (`configs/adding_t1000.yaml`)",
        (Arm("adding_t1000", "LSTM 100, chrono 1000", "configs/adding_t1000.yaml"),),
        (steps, test_mse, within, learned, minutes),
        curve="val/loss", seeds=4, quick=("--trainer.max_steps=200",)),
)


# ---- running ----

def seeds_of(experiment: Experiment, quick: bool) -> list[int]:
    return list(range(FIRST_SEED, FIRST_SEED + (experiment.quick_seeds if quick else experiment.seeds)))


def arguments(experiment: Experiment, arm: Arm, seed: int, quick: bool) -> list[str]:
    """The CLI arguments after ``fit`` that train this run (the runs folder excepted)."""
    args = ["--config", arm.config, *arm.overrides, *(experiment.quick if quick else ())]
    if seed != FIRST_SEED:
        args.append(f"--seed_everything={seed}")
        if experiment.array_data:
            args.append(f"--data.init_args.sampling_seed={seed}")
    return args


def command(experiment: Experiment, arm: Arm, quick: bool) -> str:
    """The row's command, for seed S."""
    args = arguments(experiment, arm, FIRST_SEED + 1, quick)
    text = " ".join(args).replace(f"={FIRST_SEED + 1}", "=S")
    return f"python -m lstm_pl fit {text}"


def train(experiment: Experiment, arm: Arm, seed: int, root: Path, quick: bool) -> Path:
    """Fit and test one run unless it finished before; returns its folder. Raises RuntimeError
    naming the log file if either command fails."""
    folder = root / arm.name / f"seed_{seed}"
    if (folder / "result.json").exists():
        return folder
    logger = [f"--trainer.logger.init_args.save_dir={root}", f"--trainer.logger.init_args.name={arm.name}"]
    args = arguments(experiment, arm, seed, quick)
    log = root / arm.name / f"seed_{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for stale in (folder, folder.with_name(folder.name + "_test")):  # a run cut short: start it again
        shutil.rmtree(stale, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with open(log, "w") as out:
        fit = [sys.executable, "-m", "lstm_pl", "fit", *args, *logger, f"--trainer.logger.init_args.version={folder.name}"]
        if subprocess.run(fit, stdout=out, stderr=subprocess.STDOUT, env=env).returncode:
            raise RuntimeError(f"{arm.name} seed {seed}: fit failed, see {log}")
        seconds = time.perf_counter() - start
        checkpoint = folder / "checkpoints" / "last.ckpt"
        test = [sys.executable, "-m", "lstm_pl", "test", *args, *logger,
                f"--trainer.logger.init_args.version={folder.name}_test", f"--ckpt_path={checkpoint}"]
        if subprocess.run(test, stdout=out, stderr=subprocess.STDOUT, env=env).returncode:
            raise RuntimeError(f"{arm.name} seed {seed}: test failed, see {log}")
    from .checkpoints import read_checkpoint

    result = {"seconds": seconds, "steps": read_checkpoint(checkpoint)["global_step"], "seed": seed,
              "command": " ".join(["python -m lstm_pl fit", *args])}
    with atomic_write(folder / "result.json") as partial:
        partial.write_text(json.dumps(result, indent=1))
    return folder


def run_all(experiments, root: Path, quick: bool, jobs: int) -> dict[tuple[str, int], Run]:
    """Every (arm, seed) of the experiments, each once, ``jobs`` at a time."""
    todo = {}
    for experiment in experiments:
        for arm in experiment.arms:
            for seed in seeds_of(experiment, quick):
                todo.setdefault((arm.name, seed), (experiment, arm, seed))
    failures, runs = [], {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {key: pool.submit(train, *job, root, quick) for key, job in todo.items()}
        for key, future in futures.items():
            try:
                folder = future.result()
                runs[key] = Run(folder, json.loads((folder / "result.json").read_text()))
                print(f"done: {key[0]} seed {key[1]}", flush=True)
            except RuntimeError as error:
                failures.append(str(error))
                print(f"FAILED: {error}", flush=True)
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed; first: {failures[0]}")
    return runs


# ---- reporting ----

def summary(values: list[float | None], fmt: str) -> str:
    """Median and range over seeds: ``median [min, max]`` (one value alone where there is one)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def curves_figure(experiment: Experiment, runs: dict, quick: bool, path: Path) -> None:
    """Median of ``experiment.curve`` against the step over seeds, the range shaded, one line per arm
    (a run stopped early held at its last value)."""
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = figure.add_subplot()
    for arm in experiment.arms:
        series = [dict(runs[(arm.name, seed)].scalars(experiment.curve)) for seed in seeds_of(experiment, quick)]
        steps = sorted(set.union(*(set(s) for s in series)))
        if not steps:
            continue
        # A run stopped early keeps its last value (its final state) to the longest run's end.
        values = np.array([[s.get(step, s[max(k for k in s if k <= step)] if min(s) <= step else np.nan)
                            for step in steps] for s in series])
        line, = ax.plot(steps, np.median(values, axis=0), label=arm.label, lw=1.2)
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2, lw=0)
    seeds = len(seeds_of(experiment, quick))
    ax.set(xlabel="step", ylabel=experiment.curve, yscale="log" if experiment.log_y else "linear",
           title=f"{experiment.curve}: median and range over {seeds} seed{'s' * (seeds > 1)}")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def data_figures(folder: Path) -> list[str]:
    """The original's data figures: the noisy sine and adding sequences 1, 2, 9,999 and 10,000."""
    noisy, clean = noisy_sine(251, 100, 0.05, seed=12)
    figure = Figure(figsize=(6.4, 2.8), dpi=100)
    ax = figure.add_subplot()
    ax.plot(noisy, lw=1, label="noisy sine (training data)")
    ax.plot(clean, lw=1, ls="--", label="sin(2πt/100)")
    ax.set(xlabel="t", title="Sine data: 251 points, noise 0.05·U(-1, 1), numpy seed 12")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / "data_sine.png")
    x, y = adding_problem(250, 10_000, seed=12)
    figure = Figure(figsize=(6.4, 4.8), dpi=100)
    for k, index in enumerate((0, 1, 9_998, 9_999)):
        ax = figure.add_subplot(4, 1, k + 1)
        ax.plot(x[index, :, 0], lw=0.6)
        marked = np.flatnonzero(x[index, :, 1])
        ax.plot(marked, x[index, marked, 0], "o", color="C3")
        ax.set_ylabel(f"#{index + 1:,}", fontsize=8)
        ax.set_title(f"target {y[index, 0]:.3f} = sum of the two marked values", fontsize=8)
        ax.tick_params(labelsize=7)
    figure.suptitle("Adding problem (T=250, seed 12): signal, the two marked positions", fontsize=9)
    figure.tight_layout()
    figure.savefig(folder / "data_adding.png")
    return ["data_sine.png", "data_adding.png"]


def table(experiment: Experiment, runs: dict, quick: bool) -> str:
    seeds = seeds_of(experiment, quick)
    header = ["run", *(c.header for c in experiment.columns), "command (seed S)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for arm in experiment.arms:
        cells = [f"{sum(c.value(runs[(arm.name, s)]) for s in seeds):.0f} of {len(seeds)}" if c.count else
                 summary([c.value(runs[(arm.name, s)]) for s in seeds], c.fmt) for c in experiment.columns]
        lines.append(f"| {arm.label} | " + " | ".join(cells) + f" | `{command(experiment, arm, quick)}` |")
    return "\n".join(lines)


def samples(arm: Arm, runs: dict, words: int = 30) -> str:
    """Text generated from the first seed's run of a language model (``python -m lstm_pl.generate``)."""
    folder = runs[(arm.name, FIRST_SEED)].folder
    out = subprocess.run([sys.executable, "-m", "lstm_pl.generate", "--run", str(folder), "--prompt", "the king",
                          f"--words={words}", "--temperature=0.8"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else f"(generate failed: {out.stderr.strip().splitlines()[-1:]})"


def experiment_section(experiment: Experiment, runs: dict, quick: bool, figures: Path, rel) -> str:
    """One experiment's Markdown: title, table, curves and figures (written to ``figures``)."""
    seeds = seeds_of(experiment, quick)
    minutes = sum(runs[(arm.name, s)].result["seconds"] for arm in experiment.arms for s in seeds) / 60
    out = [f"### {experiment.title}",
           f"{len(seeds)} seed{'s' * (len(seeds) > 1)}, {minutes:.0f} min of training runs in all "
           f"(`python -m lstm_pl.results --only {experiment.name}{' --quick' if quick else ''}` redoes this "
           f"section). {experiment.note}".rstrip(),
           table(experiment, runs, quick)]
    name = f"{experiment.name}_curves.png"
    curves_figure(experiment, runs, quick, figures / name)
    pictures = [f"![{name}]({rel(name)})"]
    for arm in experiment.arms:
        for kind in experiment.figures:
            source = runs[(arm.name, FIRST_SEED)].folder / f"{kind}.png"
            if source.exists():
                target = f"{arm.name}_{kind}.png"
                shutil.copyfile(source, figures / target)
                pictures.append(f"![{arm.label}, {kind}, seed 12]({rel(target)})")
    out.append(" ".join(pictures))
    if experiment.name == "shakespeare":
        for arm in experiment.arms:
            out.append(f"{arm.label}, seed 12, `python -m lstm_pl.generate --run <run folder> --prompt "
                       f"\"the king\" --words 30 --temperature 0.8`:\n\n> {samples(arm, runs)}")
    return "\n\n".join(out) + "\n"


def report(experiments, runs: dict, quick: bool, figures: Path, seconds: float, jobs: int) -> dict[str, str]:
    """The Markdown sections, by name: ``about`` (how and when), ``data``, then one per experiment;
    the figures written to ``figures``."""
    rel = lambda name: f"docs/figures/{name}" if not quick else f"figures/{name}"
    about = (f"Last regenerated by `python -m lstm_pl.results{' --quick' if quick else ''}` on "
             f"{time.strftime('%Y-%m-%d')} ({seconds / 60:.0f} min; runs already finished in its runs folder are "
             f"read back, not retrained; {jobs} runs at a time, one thread each; each section gives the training "
             f"time of its own runs). Each cell: median [min, max] over the seeds; seed S = 12, 13, ...; seed 12 "
             f"is the config as it stands.\n")
    if quick:
        about = "**QUICK MODE: fewer seeds and shorter budgets than the configs; not the results.**\n\n" + about
    sections = {"about": about,
                "data": "### Data\n\n" + " ".join(f"![{n}]({rel(n)})" for n in data_figures(figures)) + "\n"}
    for experiment in experiments:
        sections[experiment.name] = experiment_section(experiment, runs, quick, figures, rel)
    return sections


# A config of each task; the ones on PyTorch's Adam need TensorFlow made to follow it (parity/README.md).
PARITY_TASKS = {"sine": [], "adding": [], "adding_solve": ["--tensorflow-follows-pytorch-adam"],
                "shakespeare": ["--tensorflow-follows-pytorch-adam"]}


def parity_overlays(figures: Path, root: Path, quick: bool) -> str:
    """``python -m parity.compare TASK`` (float32, its default budget) for a config of each task,
    the overlays copied beside the other figures. A comparison already in ``root`` is read back."""
    lines, pictures = [], []
    for task in list(PARITY_TASKS)[:1] if quick else PARITY_TASKS:
        out = root / "parity" / task
        verdict_file = out / "verdict.txt"
        if not verdict_file.exists():
            shutil.rmtree(out, ignore_errors=True)  # a comparison cut short: start it again
            done = subprocess.run([sys.executable, "-m", "parity.compare", task, *PARITY_TASKS[task], "--out", str(out)],
                                  capture_output=True, text=True)
            verdict = (done.stdout.strip().splitlines() or [f"{task}: parity.compare failed: "
                                                            f"{done.stderr.strip()[-200:]}"])[-1]
            if done.returncode in (0, 1):  # a verdict (PASS or FAIL), not a crash: keep it
                with atomic_write(verdict_file) as partial:
                    partial.write_text(verdict)
        else:
            verdict = verdict_file.read_text()
        verdict = verdict.rsplit("; /", 1)[0]  # the report's absolute path says nothing to a reader
        lines.append(f"    python -m parity.compare {' '.join([task, *PARITY_TASKS[task]])}\n    {verdict}")
        for overlay in sorted(out.rglob("overlay.png"))[-1:]:
            target = f"parity_{task}.png"
            shutil.copyfile(overlay, figures / target)
            pictures.append(f"![parity {task}]({'figures' if quick else 'docs/figures'}/{target})")
    return ("### Parity: PyTorch against TensorFlow (Keras 3), float32\n\n" + "\n".join(lines) + "\n\n"
            + " ".join(pictures) + "\n")


def write_results(sections: dict[str, str], path: Path) -> None:
    """Put each section into the generated block of ``path`` (between ``BEGIN`` and ``END``): a
    section already there is replaced in place, a new one goes at the block's end, the others and
    everything outside the block stay; written atomically."""
    text = path.read_text() if path.exists() else ""
    if BEGIN not in text or END not in text:
        text = (text + "\n" if text else "") + f"{BEGIN}\n{END}\n"
    for name, markdown in sections.items():
        opening, closing = f"<!-- section: {name} -->", f"<!-- /section: {name} -->"
        block = f"{opening}\n{markdown.rstrip()}\n{closing}\n"
        if opening in text and closing in text:
            text = text[: text.index(opening)] + block + text[text.index(closing) + len(closing) + 1:]
        else:
            text = text[: text.index(END)] + block + "\n" + text[text.index(END):]
    with atomic_write(path) as partial:
        partial.write_text(text)


def main(argv: list[str] | None = None) -> None:
    names = [e.name for e in EXPERIMENTS + EXTRA]
    parser = argparse.ArgumentParser(prog="python -m lstm_pl.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and shorter budgets (< 10 min), clearly labelled")
    parser.add_argument("--only", nargs="+", choices=names, help="these experiments (default: all but adding_t1000)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2), one thread each")
    parser.add_argument("--runs", type=Path, help="runs folder (default runs/results, or runs/results_quick)")
    parser.add_argument("--no_parity", action="store_true", help="skip the parity overlays (they need TensorFlow)")
    args = parser.parse_args(argv)
    quiet_start()  # reading TensorBoard's event files needs no TensorFlow
    experiments = [e for e in EXPERIMENTS + EXTRA if e.name in args.only] if args.only else list(EXPERIMENTS)
    root = (args.runs or Path("runs") / ("results_quick" if args.quick else "results")).resolve()
    figures = root / "figures" if args.quick else Path("docs/figures")
    figures.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        runs = run_all(experiments, root, args.quick, args.jobs)
    except RuntimeError as error:
        sys.exit(f"lstm_pl.results: {error}")
    sections = report(experiments, runs, args.quick, figures, time.perf_counter() - start, args.jobs)
    if not args.no_parity:
        sections["parity"] = parity_overlays(figures, root, args.quick)
    target = root / "RESULTS.md" if args.quick else Path("RESULTS.md")
    write_results(sections, target)
    print(f"lstm_pl.results: {len(runs)} runs, {(time.perf_counter() - start) / 60:.1f} min; wrote "
          f"{', '.join(sections)} into {target}, figures into {figures}/")


if __name__ == "__main__":
    main()
