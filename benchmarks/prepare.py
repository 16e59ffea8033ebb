"""Preparing a corpus of WikiText-103's size: 100 million words, tokenised once into a memory-mapped
id file, then the time to the first training step of a run that reuses it.

    python -m benchmarks.prepare [--words 100_000_000] [--folder /tmp/lstm_pl_corpus]

Writes a synthetic corpus (``--words`` words drawn from a Zipf law over 267,000 distinct words,
WikiText-103's vocabulary size, 20 words a line; generated once, kept in ``--folder``), then runs
in fresh processes: (1) the preparation (``TextDataModule.setup``: checksum, three chunked passes,
``ids.bin``), timing it and reading its peak resident memory (``--reuse`` keeps one already made);
(2) a run of ``configs/shakespeare.yaml`` on that corpus (batch 20 x 35 words), which finds the
prepared ids by the text's checksum, timed from its interpreter's start to the end of its first
training step. Prints one line per measure.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FIRST_STEP = """
import sys, time
start = time.perf_counter()
import pytorch_lightning as pl
from lstm_pl import runtime
from lstm_pl.cli import CLI

runtime.start()  # as python -m lstm_pl starts


class FirstStep(pl.Callback):
    def on_train_batch_start(self, trainer, *args):
        print(f"{time.perf_counter() - start:.1f}", flush=True)

    def on_train_batch_end(self, trainer, *args):
        print(f"{time.perf_counter() - start:.1f}", flush=True)
        trainer.should_stop = True

cli = CLI(args=sys.argv[1:], run=False)
cli.trainer.callbacks.append(FirstStep())
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
"""

PREPARE = """
import resource, sys, time
from lstm_pl import TextDataModule
start = time.perf_counter()
data = TextDataModule(path=sys.argv[1], cache_dir=sys.argv[2], min_count=3, batch_size=20, seq_len=35)
data.setup("fit")
print(f"{time.perf_counter() - start:.1f} {data.vocab_size} {len(data.splits['train'])}")
"""


def write_corpus(path: Path, words: int, vocabulary: int = 267_000, seed: int = 0) -> None:
    """``words`` words from a Zipf law (exponent 1.1) over ``vocabulary`` made-up words, 20 a line."""
    rng = np.random.default_rng(seed)
    names = np.array([f"w{k}" for k in range(vocabulary)])
    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as file:
        for start in range(0, words, 10_000_000):
            count = min(10_000_000, words - start)
            ids = (rng.zipf(1.1, size=count) - 1) % vocabulary
            lines = names[ids].reshape(-1, 20) if count % 20 == 0 else names[ids][None]
            file.write("\n".join(" ".join(line) for line in lines) + "\n")
    partial.rename(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=100_000_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lstm_pl_corpus"))
    parser.add_argument("--reuse", action="store_true", help="keep a preparation already in --folder")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    corpus = args.folder / f"corpus_{args.words}.txt"
    if not corpus.exists():
        start = time.perf_counter()
        write_corpus(corpus, args.words)
        print(f"corpus: {args.words:,} words, {corpus.stat().st_size / 1e6:,.0f} MB, written in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    cache = args.folder / "cache"
    if not (args.reuse and list(cache.glob("prepared/*/meta.json"))):
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        done = subprocess.run([sys.executable, "-c", PREPARE, str(corpus), str(cache)], capture_output=True,
                              text=True, check=True)
        seconds, vocabulary, train = done.stdout.split()
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        ids = next(cache.glob("prepared/*/ids.bin"))
        print(f"preparation: {float(seconds):.0f} s, peak resident memory {peak:,.0f} MB, vocabulary "
              f"{int(vocabulary):,} (words seen 3 times or more in training), {int(train):,} training words, "
              f"ids.bin {ids.stat().st_size / 1e6:,.0f} MB", flush=True)
    done = subprocess.run([sys.executable, "-c", FIRST_STEP, "--config", "configs/shakespeare.yaml",
                           f"--data.init_args.path={corpus}", f"--data.init_args.cache_dir={cache}",
                           "--data.init_args.sha256=null", "--data.init_args.url=null", "--data.init_args.min_count=3",
                           "--data.init_args.batch_size=20", "--data.init_args.seq_len=35",
                           "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.callbacks=[]",
                           f"--trainer.logger.init_args.save_dir={args.folder / 'runs'}"],
                          capture_output=True, text=True, check=True)
    ready, stepped = done.stdout.split()[-2:]
    print(f"second run (the prepared ids found by the text's checksum), from the interpreter's start: {ready} s to "
          f"the first training batch, {stepped} s to the end of the first step")


if __name__ == "__main__":
    main()
