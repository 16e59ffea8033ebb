"""The report of finished runs: each experiment's Markdown section (a table over seeds, the curves,
the runs' own figures, generated text) and the data figures, drawn with the configs' settings."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lstm_pl.data import adding_problem, noisy_sine

from .configs import datamodule, first_seed
from .registry import ADDING_DATA, SINE_DATA, Arm, Experiment
from .runner import command, ensemble_name, ensembles_of, folder_of_test_run, seeds_of


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


def sine_data_figure(config: str = SINE_DATA) -> Figure:
    """The original's sine data: the noisy series and the clean wave, as ``config``'s DataModule makes them."""
    data = datamodule(config)
    noisy, clean = noisy_sine(data.length, data.period, data.noise, seed=data.seed)
    figure = Figure(figsize=(6.4, 2.8), dpi=100)
    ax = figure.add_subplot()
    ax.plot(noisy, lw=1, label="noisy sine (training data)")
    ax.plot(clean, lw=1, ls="--", label=f"sin(2πt/{data.period:g})")
    ax.set(xlabel="t", title=f"Sine data: {data.length} points, noise {data.noise:g}·U(-1, 1), numpy seed {data.seed}")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def adding_data_figure(config: str = ADDING_DATA) -> Figure:
    """The first two and the last two sequences of ``config``'s adding problem: the signal and its
    two marked positions."""
    data = datamodule(config)
    x, y = adding_problem(data.t, data.n_sequence, seed=data.seed)
    figure = Figure(figsize=(6.4, 4.8), dpi=100)
    for k, index in enumerate((0, 1, data.n_sequence - 2, data.n_sequence - 1)):
        ax = figure.add_subplot(4, 1, k + 1)
        ax.plot(x[index, :, 0], lw=0.6)
        marked = np.flatnonzero(x[index, :, 1])
        ax.plot(marked, x[index, marked, 0], "o", color="C3")
        ax.set_ylabel(f"#{index + 1:,}", fontsize=8)
        ax.set_title(f"target {y[index, 0]:.3f} = sum of the two marked values", fontsize=8)
        ax.tick_params(labelsize=7)
    figure.suptitle(f"Adding problem (T={data.t}, seed {data.seed}): signal, the two marked positions", fontsize=9)
    figure.tight_layout()
    return figure


def data_figures(folder: Path) -> list[str]:
    """The original's data figures, written to ``folder``: their file names."""
    sine_data_figure().savefig(folder / "data_sine.png")
    adding_data_figure().savefig(folder / "data_adding.png")
    return ["data_sine.png", "data_adding.png"]


def table(experiment: Experiment, runs: dict, quick: bool) -> str:
    """The experiment's Markdown table: a row per arm, a cell per column over seeds, the row's command."""
    seeds = seeds_of(experiment, quick)
    if experiment.per_seed:
        return per_seed_table(experiment, runs, seeds, quick)
    header = ["run", *(c.header for c in experiment.columns), "command (seed S)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for arm in experiment.arms:
        cells = [f"{sum(c.value(runs[(arm.name, s)]) for s in seeds):.0f} of {len(seeds)}" if c.count else
                 summary([c.value(runs[(arm.name, s)]) for s in seeds], c.fmt) for c in experiment.columns]
        lines.append(f"| {arm.label} | " + " | ".join(cells) + f" | `{command(experiment, arm, quick)}` |")
    return "\n".join(lines)


def per_seed_table(experiment: Experiment, runs: dict, seeds: list[int], quick: bool) -> str:
    """A row per arm and seed (each run's own numbers: what a criterion met or missed is per run),
    then the arm's count of runs that meet each yes/no column and the median [min, max] of the others."""
    header = ["run", "seed", *(c.header for c in experiment.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for arm in experiment.arms:
        for seed in seeds:
            run = runs[(arm.name, seed)]
            cells = [("yes" if c.value(run) else "no") if c.count else c.fmt.format(c.value(run)) for c in experiment.columns]
            lines.append(f"| {arm.label} | {seed} | " + " | ".join(cells) + " |")
        counts = [f"{sum(c.value(runs[(arm.name, s)]) for s in seeds):.0f} of {len(seeds)}" if c.count
                  else summary([c.value(runs[(arm.name, s)]) for s in seeds], c.fmt) for c in experiment.columns]
        lines.append(f"| {arm.label}, all seeds | | " + " | ".join(counts) + " |")
    commands = "; ".join(f"{arm.label}: `{command(experiment, arm, quick)}`" for arm in experiment.arms)
    return "\n".join(lines) + f"\n\nCommands (seed S): {commands}."


def ensemble_table(experiment: Experiment, runs: dict, quick: bool) -> str:
    """A row per ensemble: its seeds, its members' test perplexities, its own (all words and without
    <unk>) and its members' CPU seconds summed; then the ensembles' median [min, max], and the command."""
    groups = ensembles_of(experiment, quick)
    header = ["ensemble", "members' test perplexity", "ensemble's test perplexity",
              "ensemble's test perplexity without <unk>", f"CPU s, its {len(groups[0])} fits"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for arm in experiment.arms:
        values = []
        for seeds in groups:
            run = runs[(arm.name, ensemble_name(seeds))]
            row = [run.last("test/perplexity_ensemble"), run.last("test/perplexity_ensemble_without_unk"),
                   run.result["cpu_seconds"]]
            values.append(row)
            members = ", ".join(f"{runs[(arm.name, seed)].test('test/perplexity'):.1f}" for seed in seeds)
            lines.append(f"| {arm.label}, seeds {seeds[0]} to {seeds[-1]} | {members} | {row[0]:.1f} | {row[1]:.1f} | "
                         f"{row[2]:,.0f} |")
        cells = [summary([row[i] for row in values], fmt) for i, fmt in enumerate(("{:.1f}", "{:.1f}", "{:,.0f}"))]
        lines.append(f"| {arm.label}, all ensembles | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (
        f"\n\nAn ensemble's test (the runs of seeds S to S+{len(groups[0]) - 1}): `python -m lstm_pl test "
        f"--config {experiment.arms[0].config} --ckpt_path <seed S run>/checkpoints/last.ckpt "
        f"--ensemble.checkpoints='[<seed S+1 run>/checkpoints/last.ckpt, ...]'`.")


def samples(arm: Arm, runs: dict, words: int = 30) -> str:
    """Text generated from the first seed's run of a language model (``python -m lstm_pl.generate``)."""
    folder = runs[(arm.name, first_seed())].folder
    out = subprocess.run([sys.executable, "-m", "lstm_pl.generate", "--run", str(folder), "--prompt", "the king",
                          f"--words={words}", "--temperature=0.8"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else f"(generate failed: {out.stderr.strip().splitlines()[-1:]})"


def figure_link(name: str, quick: bool) -> str:
    """Where RESULTS.md links a figure: docs/figures/ (quick mode: figures/ beside its RESULTS.md)."""
    return f"figures/{name}" if quick else f"docs/figures/{name}"


def resumed_note(experiment: Experiment, runs: dict, seeds: list[int]) -> str:
    """The runs the runner went on with from a checkpoint after a kill, where there are any."""
    resumed = [f"{arm.label} seed {seed}" for arm in experiment.arms for seed in seeds
               if runs[(arm.name, seed)].result.get("resumed")]
    return (f" Gone on with from a checkpoint after a kill (their seconds sum the parts): {', '.join(resumed)}."
            if resumed else "")


def experiment_section(experiment: Experiment, runs: dict, quick: bool, figures: Path) -> str:
    """One experiment's Markdown: title, table, curves and figures (written to ``figures``)."""
    seeds = seeds_of(experiment, quick)
    minutes = sum(runs[(arm.name, s)].result["seconds"] for arm in experiment.arms for s in seeds) / 60
    out = [f"### {experiment.title}",
           f"{len(seeds)} seed{'s' * (len(seeds) > 1)}, {minutes:.0f} min of training runs in all "
           f"(`python -m lstm_pl.results --only {experiment.name}{' --quick' if quick else ''}` redoes this "
           f"section). {experiment.note}{resumed_note(experiment, runs, seeds)}".rstrip(),
           table(experiment, runs, quick)]
    if experiment.ensemble > 1:
        out.append(ensemble_table(experiment, runs, quick))
    name = f"{experiment.name}_curves.png"
    curves_figure(experiment, runs, quick, figures / name)
    pictures = [f"![{name}]({figure_link(name, quick)})"]
    for arm in experiment.arms:
        for kind in experiment.figures:
            folder = runs[(arm.name, first_seed())].folder
            source = (folder_of_test_run(folder) if kind.endswith("_test") else folder) / f"{kind}.png"
            if source.exists():
                target = f"{arm.name}_{kind}.png"
                shutil.copyfile(source, figures / target)
                pictures.append(f"![{arm.label}, {kind}, seed {first_seed()}]({figure_link(target, quick)})")
    out.append(" ".join(pictures))
    if experiment.samples:
        for arm in experiment.arms:
            out.append(f"{arm.label}, seed {first_seed()}, `python -m lstm_pl.generate --run <run folder> --prompt "
                       f"\"the king\" --words 30 --temperature 0.8`:\n\n> {samples(arm, runs)}")
    return "\n\n".join(out) + "\n"


def report(experiments, runs: dict, quick: bool, figures: Path, seconds: float, jobs: int,
           whole: bool = True) -> dict[str, str]:
    """The Markdown sections, by name: ``about`` (how and when) and ``data`` where ``whole`` is the
    whole regeneration (a part of it leaves them as they were), then one per experiment; the
    figures written to ``figures``."""
    sections = {experiment.name: experiment_section(experiment, runs, quick, figures) for experiment in experiments}
    if not whole:
        return sections
    seed = first_seed()
    about = (f"Last regenerated by `python -m lstm_pl.results{' --quick' if quick else ''}` on "
             f"{time.strftime('%Y-%m-%d')} ({seconds / 60:.0f} min; runs already finished in its runs folder are "
             f"read back, not retrained; {jobs} runs at a time, one thread each; each section gives the training "
             f"time of its own runs). Each cell: median [min, max] over the seeds; seed S = {seed}, {seed + 1}, ...; "
             f"seed {seed} is the config as it stands.\n")
    if quick:
        about = "**QUICK MODE: fewer seeds and shorter budgets than the configs; not the results.**\n\n" + about
    return {"about": about,
            "data": "### Data\n\n" + " ".join(f"![{n}]({figure_link(n, quick)})" for n in data_figures(figures)) + "\n",
            **sections}
