"""The training runs: each (arm, seed) an ordinary ``python -m lstm_pl fit`` then ``test`` in its own
process, ``jobs`` at a time; a run that finished before is read back from its folder, not rerun, a
run cut short goes on from its last checkpoint, and a run another results command is training (its
lock file) is left alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lstm_pl.checkpoints import read_checkpoint
from lstm_pl.errors import ConfigError
from lstm_pl.files import alive, atomic_write

from .configs import first_seed
from .registry import Arm, Experiment


def folder_of_test_run(folder: Path) -> Path:
    """Where the test run of the fit in ``folder`` writes: ``<folder>_test`` beside it."""
    return folder.with_name(folder.name + "_test")


@dataclass
class Run:
    """One finished run, read back from its folder: ``result.json`` and the TensorBoard events."""

    folder: Path
    result: dict
    _events: dict = field(default_factory=dict)

    def scalars(self, tag: str, stage: str = "fit") -> list[tuple[int, float]]:
        """``tag``'s (step, value) pairs as the fit (or the ``test`` run) logged them; [] where it logged none."""
        if stage not in self._events:
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            events = EventAccumulator(str(self.folder if stage == "fit" else folder_of_test_run(self.folder)))
            events.Reload()
            self._events[stage] = events
        events = self._events[stage]
        if tag not in events.Tags()["scalars"]:
            return []
        return [(e.step, e.value) for e in events.Scalars(tag)]

    def last(self, tag: str, stage: str = "fit") -> float | None:
        """``tag``'s last value, or None where it was never logged."""
        values = self.scalars(tag, stage)
        return values[-1][1] if values else None

    def test(self, tag: str) -> float | None:
        """``tag`` as the test run of the last checkpoint logged it."""
        return self.last(tag, "test")


def seeds_of(experiment: Experiment, quick: bool) -> list[int]:
    """The seeds ``experiment`` trains over: the configs' own, then the next ones."""
    return list(range(first_seed(), first_seed() + (experiment.quick_seeds if quick else experiment.seeds)))


def arguments(experiment: Experiment, arm: Arm, seed: int, quick: bool) -> list[str]:
    """The CLI arguments after ``fit`` that train this run (the runs folder excepted)."""
    args = ["--config", arm.config, *arm.overrides, *(experiment.quick if quick else ())]
    if seed != first_seed():
        args.append(f"--seed_everything={seed}")
        if experiment.array_data:
            args.append(f"--data.init_args.sampling_seed={seed}")
    return args


def command(experiment: Experiment, arm: Arm, quick: bool) -> str:
    """The row's command, for seed S."""
    args = arguments(experiment, arm, first_seed() + 1, quick)
    text = " ".join(args).replace(f"={first_seed() + 1}", "=S")
    return f"python -m lstm_pl fit {text}"


def lstm_pl_command(subcommand: str, args: list[str], root: Path, arm: Arm, version: str) -> list[str]:
    """``python -m lstm_pl <subcommand> <args>`` logging into ``<root>/<arm>/<version>``."""
    return [sys.executable, "-m", "lstm_pl", subcommand, *args, f"--trainer.logger.init_args.save_dir={root}",
            f"--trainer.logger.init_args.name={arm.name}", f"--trainer.logger.init_args.version={version}"]


ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # every run's environment, over the caller's


def child(command: list[str], out, env: dict) -> tuple[int, float]:
    """Run ``command`` to its end: its exit status and the CPU seconds it used (user + system, its
    own, whatever else runs beside it)."""
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime


@contextmanager
def run_lock(lock: Path):
    """Hold ``lock`` (a file holding this process's id) while a run trains: a second results
    command on the same runs folder would otherwise take the unfinished run for one cut short and
    delete it. A lock whose process has ended (a kill) is taken over."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(50):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                holder = lock.read_text().strip()
            except FileNotFoundError:  # released between the two calls: try again
                continue
            if holder.isdigit() and alive(int(holder)):
                raise RuntimeError(f"{lock.stem} is being trained by process {holder} ({lock}); wait for it, "
                                   f"or stop that process") from None
            if not holder and attempt < 10:  # just made, its process id not yet written
                time.sleep(0.05)
                continue
            lock.unlink(missing_ok=True)
    else:
        raise RuntimeError(f"{lock}: could not take the run's lock")
    with os.fdopen(descriptor, "w") as file:
        file.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def train(experiment: Experiment, arm: Arm, seed: int, root: Path, quick: bool) -> Path:
    """Fit and test one run unless it finished before; returns its folder. Raises RuntimeError
    naming the log file if either command fails."""
    folder = root / arm.name / f"seed_{seed}"
    if (folder / "result.json").exists():
        return folder
    with run_lock(root / arm.name / f"seed_{seed}.lock"):
        return fit_and_test(experiment, arm, seed, root, quick, folder)


def cost_so_far(checkpoint: Path) -> dict[str, float] | None:
    """What the fit that wrote ``checkpoint`` had cost when it did (``Report.cost``: CPU and wall
    seconds over its processes), or None where there is no checkpoint to go on from: none, one
    unreadable, or one written before checkpoints carried their cost."""
    if not checkpoint.is_file():
        return None
    try:
        cost = read_checkpoint(checkpoint).get("callbacks", {}).get("Report")
    except ConfigError:
        return None
    return cost if isinstance(cost, dict) and "cpu_seconds" in cost else None


def read_progress(path: Path) -> dict | None:
    """``progress.json`` of a run folder (its arguments; the fit's cost once the fit has ended), or
    None where it is missing or unreadable."""
    try:
        progress = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return progress if isinstance(progress, dict) else None


def fit_and_test(experiment: Experiment, arm: Arm, seed: int, root: Path, quick: bool, folder: Path) -> Path:
    """``train``'s work, under the run's lock. A run cut short (a kill) with the same arguments
    goes on where it stopped: after its fit, with the test alone; during it, from its
    ``last.ckpt`` (lstm_pl resumes exactly), the cost so far added to the rest. A run with other
    arguments, or without a checkpoint to go on from, starts again."""
    args = arguments(experiment, arm, seed, quick)
    log = root / arm.name / f"seed_{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    checkpoint, progress_file = folder / "checkpoints" / "last.ckpt", folder / "progress.json"
    progress = read_progress(progress_file)
    same = progress is not None and progress.get("arguments") == args
    fitted = progress.get("fit") if same else None            # the fit ended: its cost
    earlier = cost_so_far(checkpoint) if same else None        # the fit was cut short after a checkpoint
    going_on = fitted is not None or earlier is not None
    for stale in ((folder_of_test_run(folder),) if going_on else (folder, folder_of_test_run(folder))):
        shutil.rmtree(stale, ignore_errors=True)
    if not going_on:
        folder.mkdir(parents=True)
        with atomic_write(progress_file) as partial:
            partial.write_text(json.dumps({"arguments": args, "fit": None}, indent=1))
    env = {**os.environ, **ONE_THREAD}
    with open(log, "a" if going_on else "w") as out:
        if going_on:
            out.write(f"\n[lstm_pl.results] going on from {'the ended fit' if fitted else checkpoint}\n")
            out.flush()
        if fitted is None:
            earlier = earlier or {"cpu_seconds": 0.0, "wall_seconds": 0.0}
            start = time.perf_counter()
            fit = lstm_pl_command("fit", args, root, arm, folder.name) + ([f"--ckpt_path={checkpoint}"] if going_on else [])
            failed, cpu_seconds = child(fit, out, env)
            if failed:
                raise RuntimeError(f"{arm.name} seed {seed}: fit failed, see {log}")
            fitted = {"cpu_seconds": cpu_seconds + earlier["cpu_seconds"],
                      "seconds": time.perf_counter() - start + earlier["wall_seconds"]}
            with atomic_write(progress_file) as partial:
                partial.write_text(json.dumps({"arguments": args, "fit": fitted}, indent=1))
        test = lstm_pl_command("test", args, root, arm, folder_of_test_run(folder).name) + [f"--ckpt_path={checkpoint}"]
        if child(test, out, env)[0]:
            raise RuntimeError(f"{arm.name} seed {seed}: test failed, see {log}")
    result = {"seconds": fitted["seconds"], "cpu_seconds": fitted["cpu_seconds"],
              "steps": read_checkpoint(checkpoint)["global_step"], "seed": seed,
              "command": " ".join(["python -m lstm_pl fit", *args]), "resumed": going_on}
    with atomic_write(folder / "result.json") as partial:
        partial.write_text(json.dumps(result, indent=1))
    return folder


def ensembles_of(experiment: Experiment, quick: bool) -> list[list[int]]:
    """The seeds of each of ``experiment``'s ensembles: consecutive groups of ``experiment.ensemble``
    (none where it is 1; quick mode: one group of its seeds)."""
    seeds = seeds_of(experiment, quick)
    if experiment.ensemble <= 1:
        return []
    size = min(experiment.ensemble, len(seeds))
    return [seeds[start:start + size] for start in range(0, len(seeds) - size + 1, size)]


def ensemble_name(seeds: list[int]) -> str:
    return f"ensemble_{seeds[0]}-{seeds[-1]}"


def score_ensemble(experiment: Experiment, arm: Arm, seeds: list[int], members: list[Run], root: Path,
                   quick: bool) -> Path:
    """Test the first seed's last checkpoint with the other seeds' as its ensemble (``ensemble.checkpoints``),
    ``members`` being the seeds' finished runs, into ``<root>/<arm>/ensemble_<first>-<last>`` (read back
    where it finished before); its ``result.json`` sums the members' fit seconds. Raises RuntimeError
    naming the log if it fails."""
    folder = root / arm.name / ensemble_name(seeds)
    if (folder / "result.json").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    checkpoints = [member.folder / "checkpoints" / "last.ckpt" for member in members]
    log = root / arm.name / f"{folder.name}.log"
    test = lstm_pl_command("test", arguments(experiment, arm, seeds[0], quick), root, arm, folder.name) + [
        f"--ckpt_path={checkpoints[0]}", f"--ensemble.checkpoints=[{', '.join(str(path) for path in checkpoints[1:])}]"]
    with open(log, "w") as out:
        if child(test, out, {**os.environ, **ONE_THREAD})[0]:
            raise RuntimeError(f"{arm.name} {folder.name}: test failed, see {log}")
    result = {"seeds": seeds, "cpu_seconds": sum(member.result["cpu_seconds"] for member in members),
              "seconds": sum(member.result["seconds"] for member in members)}
    with atomic_write(folder / "result.json") as partial:
        partial.write_text(json.dumps(result, indent=1))
    return folder


def run_all(experiments, root: Path, quick: bool, jobs: int) -> dict[tuple[str, int | str], Run]:
    """Every (arm, seed) of the experiments, each once, ``jobs`` at a time; then each ensemble's
    test, keyed (arm, ``ensemble_<first>-<last>``), its scalars read with ``Run.last``."""
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
    for experiment in experiments:
        for arm in experiment.arms:
            for seeds in ensembles_of(experiment, quick):
                folder = score_ensemble(experiment, arm, seeds, [runs[(arm.name, seed)] for seed in seeds], root, quick)
                runs[(arm.name, folder.name)] = Run(folder, json.loads((folder / "result.json").read_text()))
                print(f"done: {arm.name} {folder.name}", flush=True)
    return runs
