"""Continue a prompt with a trained word-level language model:

    python -m lstm_pl.generate --run runs/shakespeare/version_0 \\
        --prompt "wherefore art thou" --words 30 --temperature 0.8 --top_k 40 --seed 1
    python -m lstm_pl.generate --run runs/shakespeare/version_0 --prompt "wherefore art thou" --top_p 0.9

``--run`` is a run folder (its ``checkpoints/last.ckpt`` and ``tokenizer.json``) or a checkpoint
file inside one; ``--tokenizer`` names another tokenizer file. The prompt is normalised as the
training text was; words outside the vocabulary become ``<unk>``. The same seed gives the same
text. Printed: the prompt as the model read it, then the continuation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer

from . import runtime
from .cli import OneLineErrorParser
from .errors import first_line
from .tasks import LanguageModelTask
from .corpus import TOKENIZER_FILE, UNKNOWN, as_text


def load_run(run: str | Path, tokenizer: str | Path | None = None) -> tuple[LanguageModelTask, Tokenizer]:
    """The model (eval mode, CPU) and tokenizer of a language-model run: ``run`` is the run folder
    (``runs/<name>/version_<n>``, read at ``checkpoints/last.ckpt``) or a checkpoint inside its
    ``checkpoints/``; the tokenizer is ``tokenizer`` if given, else the run folder's ``tokenizer.json``."""
    run = Path(run)
    checkpoint = run / "checkpoints" / "last.ckpt" if run.is_dir() else run
    folder = run if run.is_dir() else run.parent.parent
    tokenizer = Path(tokenizer) if tokenizer is not None else folder / TOKENIZER_FILE
    for name, path in (("--run", checkpoint), ("--tokenizer", tokenizer)):
        if not path.is_file():
            raise ValueError(f"{name}: no such file {path}")
    try:
        task = LanguageModelTask.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    except Exception as error:  # noqa: BLE001 - truncated, another task's, not a checkpoint at all
        raise ValueError(f"--run: {checkpoint} is not a readable language-model checkpoint ({first_line(error)})") from None
    try:
        return task, Tokenizer.from_file(str(tokenizer))
    except Exception as error:  # noqa: BLE001 - the tokenizers library raises plain Exceptions
        raise ValueError(f"--tokenizer: {tokenizer} is not a readable tokenizer.json ({first_line(error)})") from None


def generate(task: LanguageModelTask, tokenizer: Tokenizer, prompt: str, words: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0, allow_unknown: bool = False, top_p: float | None = None) -> str:
    """The prompt as the model read it (its words, ``<unk>`` for unknown ones), then ``words``
    generated words, separated by spaces."""
    prompt_ids = tokenizer.encode(prompt).ids
    if not prompt_ids:
        raise ValueError("--prompt has no words")
    vocab_size = task.net.decoder.out_features
    if vocab_size != tokenizer.get_vocab_size():
        raise ValueError(f"--tokenizer: it has {tokenizer.get_vocab_size()} words, the model {vocab_size}")
    generator = torch.Generator().manual_seed(seed)
    new_ids = task.net.generate(torch.tensor(prompt_ids), words, temperature, top_k,
                                banned=None if allow_unknown else tokenizer.token_to_id(UNKNOWN), generator=generator,
                                top_p=top_p)
    return as_text(tokenizer.decode(prompt_ids + new_ids.tolist(), skip_special_tokens=False))


def main(args: list[str] | None = None) -> None:
    runtime.start()
    parser = OneLineErrorParser(prog="python -m lstm_pl.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a run folder, or a checkpoint (.ckpt) in one")
    parser.add_argument("--tokenizer", help="tokenizer.json to use instead of the run's own")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--words", type=int, default=30, help="how many words to generate (at least 1)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = always the most likely word")
    parser.add_argument("--top_k", type=int, default=0, help="sample among the k most likely words (default 0: all)")
    parser.add_argument("--top_p", type=float, default=1.0,
                        help="sample among the fewest most likely words whose probability sums to at least p (default 1: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same text")
    parser.add_argument("--allow_unknown", type=bool, default=False, help="let the model generate <unk> (banned by default)")
    options = parser.parse_args(args)
    if options.words < 1:
        parser.error(f"--words must be at least 1, got {options.words}")
    if options.temperature < 0 or options.top_k < 0:
        parser.error("--temperature and --top_k must not be negative")
    if not 0 < options.top_p <= 1:
        parser.error(f"--top_p must be in (0, 1], got {options.top_p}")
    try:
        task, tokenizer = load_run(options.run, options.tokenizer)
        text = generate(task, tokenizer, options.prompt, options.words, options.temperature, options.top_k or None,
                        options.seed, options.allow_unknown, options.top_p)
    except ValueError as error:
        parser.error(str(error))
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
