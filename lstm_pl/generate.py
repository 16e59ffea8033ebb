"""Continue a prompt with a trained word-level language model:

    python -m lstm_pl.generate --checkpoint runs/shakespeare/version_0/checkpoints/last.ckpt \\
        --prompt "wherefore art thou" --words 30 --temperature 0.8 --top_k 40 --seed 1

The tokenizer is the one saved in the checkpoint (``--tokenizer tokenizer.json`` to use another
file), so the prompt is normalised as the training text was; words outside the vocabulary become
``<unk>``. The same seed gives the same text. Printed: the prompt as the model read it, then the
continuation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .tasks import LanguageModelTask
from .text import UNKNOWN, TextDataModule


def load(checkpoint: str | Path, tokenizer: str | Path | None = None) -> tuple[LanguageModelTask, Tokenizer]:
    """The model (eval mode, CPU) and tokenizer of a ``LanguageModelTask`` checkpoint; the
    tokenizer from ``tokenizer`` if given, else the one the checkpoint carries."""
    task = LanguageModelTask.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    if tokenizer is not None:
        return task, Tokenizer.from_file(str(tokenizer))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True).get(TextDataModule.__qualname__, {})
    if "tokenizer" not in state:
        raise ValueError(f"{checkpoint} carries no tokenizer; pass --tokenizer")
    return task, Tokenizer.from_str(state["tokenizer"])


def generate(task: LanguageModelTask, tokenizer: Tokenizer, prompt: str, words: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0, allow_unknown: bool = False) -> str:
    """The prompt as the model read it (its words, ``<unk>`` for unknown ones), then ``words``
    generated words, separated by spaces."""
    prompt_ids = tokenizer.encode(prompt).ids
    if not prompt_ids:
        raise ValueError("--prompt has no words")
    if task.hparams.vocab_size != tokenizer.get_vocab_size():
        raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} words, the model {task.hparams.vocab_size}")
    generator = torch.Generator().manual_seed(seed)
    new_ids = task.net.generate(torch.tensor(prompt_ids), words, temperature, top_k,
                                banned=None if allow_unknown else tokenizer.token_to_id(UNKNOWN), generator=generator)
    return tokenizer.decode(prompt_ids + new_ids.tolist(), skip_special_tokens=False)


class OneLineParser(argparse.ArgumentParser):
    """Reports bad input as one line naming the option or file."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def main(args: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m lstm_pl.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a LanguageModelTask checkpoint (.ckpt)")
    parser.add_argument("--tokenizer", help="tokenizer.json to use instead of the checkpoint's own")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--words", type=int, default=30, help="how many words to generate (default 30)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = always the most likely word")
    parser.add_argument("--top_k", type=int, default=0, help="sample among the k most likely words (default 0: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same text")
    parser.add_argument("--allow_unknown", action="store_true", help="let the model generate <unk> (banned by default)")
    options = parser.parse_args(args)
    for name, path in (("--checkpoint", options.checkpoint), ("--tokenizer", options.tokenizer)):
        if path is not None and not Path(path).is_file():
            parser.error(f"{name}: no such file {path}")
    if options.words < 0 or options.temperature < 0 or options.top_k < 0:
        parser.error("--words, --temperature and --top_k must not be negative")
    try:
        task, tokenizer = load(options.checkpoint, options.tokenizer)
        text = generate(task, tokenizer, options.prompt, options.words, options.temperature, options.top_k or None,
                        options.seed, options.allow_unknown)
    except ValueError as error:
        parser.error(str(error))
    print(text)


if __name__ == "__main__":
    main()
