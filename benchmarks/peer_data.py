"""Our Shakespeare split in pytorch/examples' word_language_model format, so that its own
``main.py`` trains and scores on exactly our words (RESULTS.md's peer comparison):

    python -m benchmarks.peer_data --out runs/peer_data [--config configs/shakespeare_best.yaml]
    python main.py --data runs/peer_data --tied --emsize 256 --nhid 256 --nlayers 1 --dropout 0.5 --epochs 30

(``main.py`` from github.com/pytorch/examples, word_language_model/, not part of this repository.)
Each split is written as one line of space-separated words, ``<unk>`` included, in our order:
``main.py`` adds one ``<eos>`` at the end of each line, so its streams are ours plus one word per
split, and its vocabulary is ours plus ``<eos>``. Its evaluation uses 10 streams, as ours does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lstm_pl import runtime
from lstm_pl.files import atomic_write
from parity import pytorch_side

FILES = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/shakespeare_best.yaml")
    parser.add_argument("--out", type=Path, required=True)
    args, overrides = parser.parse_known_args()
    runtime.start()
    data = pytorch_side.build(args.config, overrides).datamodule
    data.prepare_data()
    data.setup("fit")
    for split, name in FILES.items():
        words = [data.tokenizer.id_to_token(int(i)) for i in data.splits[split]]
        with atomic_write(args.out / name) as partial:
            partial.write_text(" ".join(words) + "\n", encoding="utf-8")
        print(f"{args.out / name}: {len(words):,} words")


if __name__ == "__main__":
    main()
