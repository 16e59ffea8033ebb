"""The parity section: ``python -m parity.compare`` for a config of each task (PyTorch against
TensorFlow), each in its own process, its verdict and overlay figure kept beside the runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from lstm_pl.files import atomic_write

from .registry import PARITY_TASKS
from .report import figure_link


def compare(task: str, out: Path) -> str:
    """``python -m parity.compare TASK`` (float32, its default budget) into ``out``: its verdict line.
    A comparison already in ``out`` is read back; a verdict (PASS or FAIL) is kept, a crash is not."""
    verdict_file = out / "verdict.txt"
    if verdict_file.exists():
        return verdict_file.read_text()
    shutil.rmtree(out, ignore_errors=True)  # a comparison cut short: start it again
    done = subprocess.run([sys.executable, "-m", "parity.compare", task, *PARITY_TASKS[task], "--out", str(out)],
                          capture_output=True, text=True)
    verdict = (done.stdout.strip().splitlines() or [f"{task}: parity.compare failed: {done.stderr.strip()[-200:]}"])[-1]
    if done.returncode in (0, 1):  # a verdict (PASS or FAIL), not a crash: keep it
        with atomic_write(verdict_file) as partial:
            partial.write_text(verdict)
    return verdict


def parity_overlays(figures: Path, root: Path, quick: bool) -> str:
    """The parity section's Markdown: each task's command and verdict (the first task alone in
    quick mode), the overlays copied to ``figures``; comparisons kept under ``root/parity``."""
    lines, pictures = [], []
    for task in list(PARITY_TASKS)[:1] if quick else PARITY_TASKS:
        out = root / "parity" / task
        verdict = compare(task, out).rsplit("; /", 1)[0]  # the report's absolute path says nothing to a reader
        lines.append(f"    python -m parity.compare {' '.join([task, *PARITY_TASKS[task]])}\n    {verdict}")
        for overlay in sorted(out.rglob("overlay.png"))[-1:]:
            target = f"parity_{task}.png"
            shutil.copyfile(overlay, figures / target)
            pictures.append(f"![parity {task}]({figure_link(target, quick)})")
    return ("### Parity: PyTorch against TensorFlow (Keras 3), float32\n\n" + "\n".join(lines) + "\n\n"
            + " ".join(pictures) + "\n")
