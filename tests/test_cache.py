"""The continuous cache (``lstm_pl/cache.py``): its window-at-a-time computation against Grave et
al.'s formula written word by word, the perplexity a validation logs against the same formula over
the model's own outputs, and its settings refused where they cannot apply."""

import math
from pathlib import Path

import pytest
import torch

from lstm_pl.cache import CacheMemory
from lstm_pl.cli import CLI, main

CONFIG = str(Path(__file__).parents[1] / "configs" / "shakespeare.yaml")


def word_by_word(hidden: torch.Tensor, targets: torch.Tensor, theta: float, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """p_cache(x_{t+1} | h_t) = Σ_{i in [t - window, t)} [x_{i+1} = x_{t+1}] softmax_i(θ h_t·h_i), one
    stream and one step at a time (pointer.py's loop); whether step t had any history."""
    streams, steps, _ = hidden.shape
    p, has = torch.zeros(streams, steps, dtype=hidden.dtype), torch.zeros(streams, steps, dtype=torch.bool)
    for b in range(streams):
        for t in range(1, steps):
            before = range(max(0, t - window), t)
            weights = torch.softmax(torch.stack([theta * hidden[b, t] @ hidden[b, i] for i in before]), dim=0)
            p[b, t] = sum(w for w, i in zip(weights, before) if targets[b, i] == targets[b, t])
            has[b, t] = True
    return p, has


@pytest.mark.parametrize("window", [1, 4, 9, 40])
def test_the_memory_is_the_formula_word_by_word(window):
    """Windows of uneven lengths, a memory shorter than a window and longer than the text: the
    same probabilities as the word-by-word loop, each step reading only the steps before it."""
    torch.manual_seed(0)
    hidden, targets = torch.randn(3, 23, 5, dtype=torch.float64), torch.randint(0, 4, (3, 23))
    memory, parts = CacheMemory(window), []
    for start, end in ((0, 6), (6, 7), (7, 15), (15, 23)):
        parts.append(memory.probabilities(hidden[:, start:end], targets[:, start:end], theta=0.7))
    p, has = (torch.cat(part, dim=1) for part in zip(*parts))
    expected_p, expected_has = word_by_word(hidden, targets, 0.7, window)
    assert torch.equal(has, expected_has)
    assert torch.allclose(p, expected_p, rtol=1e-12, atol=1e-15)
    assert memory.hidden.shape[1] == min(window, 23)


def test_half_precision_outputs_are_scored_in_float32():
    """bfloat16 outputs (a mixed-precision run) are scored in float32: the formula's value on the
    same rounded numbers, not bfloat16's three significant digits."""
    torch.manual_seed(0)
    hidden, targets = torch.randn(2, 12, 8).bfloat16(), torch.randint(0, 3, (2, 12))
    p, has = CacheMemory(5).probabilities(hidden, targets, theta=0.7)
    expected, _ = word_by_word(hidden.double(), targets, 0.7, 5)
    assert p.dtype == torch.float32 and torch.allclose(p.double(), expected, rtol=1e-5, atol=1e-7)


def test_validation_logs_the_mixed_perplexity(tmp_path, corpus_args):
    """``val/perplexity_with_cache`` is exp of the mean of -log((1 - λ) p_model + λ p_cache) over
    every target (the first of each stream: p_model alone), the streams read in order with the
    state carried, as the formula gives it from the model's own outputs; the plain metrics are
    the model's alone."""
    cli = CLI(args=["--config", CONFIG, f"--trainer.logger.init_args.save_dir={tmp_path}", *corpus_args,
                    "--trainer.limit_val_batches=5", "--model.init_args.net.embedding_size=16",
                    "--model.init_args.net.hidden_size=16", "--data.init_args.seq_len=12",
                    "--cache.interpolation=0.3", "--cache.theta=0.5", "--cache.window=20"], run=False)
    metrics = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
    net, state, hidden, targets, log_probs = cli.model.net.eval(), None, [], [], []
    with torch.no_grad():
        for batch, (x, y) in enumerate(cli.datamodule.val_dataloader()):
            if batch == 5:
                break
            logits, state, outputs, _ = net.run(x, state)
            hidden.append(outputs), targets.append(y)
            log_probs.append(torch.log_softmax(logits, -1).gather(-1, y[..., None])[..., 0])
    hidden, targets, log_probs = (torch.cat(part, dim=1).double() for part in (hidden, targets, log_probs))
    p_cache, has = word_by_word(hidden, targets.long(), 0.5, 20)
    p = torch.where(has, 0.7 * log_probs.exp() + 0.3 * p_cache, log_probs.exp())
    assert metrics["val/perplexity_with_cache"] == pytest.approx(math.exp(-p.log().mean().item()), rel=1e-5)
    assert metrics["val/perplexity"] == pytest.approx(math.exp(-log_probs.mean().item()), rel=1e-5)


def test_a_repeating_text_is_what_the_cache_is_for(tmp_path, corpus_args):
    """An untrained model scores a text near its vocabulary's size; with the cache, words the text
    has just used are likely again, and the generated corpus's names recur: lower."""
    cli = CLI(args=["--config", CONFIG, f"--trainer.logger.init_args.save_dir={tmp_path}", *corpus_args,
                    "--trainer.limit_val_batches=10", "--cache.interpolation=0.5", "--cache.theta=0.1"], run=False)
    metrics = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
    assert metrics["val/perplexity_with_cache"] < 0.8 * metrics["val/perplexity"]


@pytest.mark.parametrize("override, says", [
    ("--cache.interpolation=1.5", "cache.interpolation"),
    ("--cache.theta=0", "cache.theta"),
    ("--cache.window=0", "cache.window"),
    ("--dynamic_eval.lr=0", "dynamic_eval.lr"),  # the other evaluation-time scorer (lstm_pl/dynamic.py)
    ("--dynamic_eval.decay=1.5", "dynamic_eval.decay"),
])
def test_settings_out_of_range_are_one_line(tmp_path, capsys, override, says):
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", CONFIG, override, f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], lines


@pytest.mark.parametrize("override, says", [
    ("--cache.interpolation=0.2", "cache.interpolation: the continuous cache scores a language model"),
    ("--dynamic_eval.lr=1", "dynamic_eval.lr: dynamic evaluation adapts a language model"),
])
def test_a_scorer_on_a_task_without_words_is_refused_before_anything_is_written(config_path, tmp_path, capsys,
                                                                                 override, says):
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", config_path("sine"), override, f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], lines
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]
