"""The learned cache (``lstm_pl/models.py``, ``LearnedCache``): at its start it is the continuous
cache of ``lstm_pl/cache.py`` (two implementations of one formula); it reads only the words before
each step; its memory carries window to window; generation draws from the distribution that
training scores; and a language model trains with it through the CLI."""

import math
from pathlib import Path

import pytest
import torch

from lstm_pl.cache import CacheScore
from lstm_pl.cli import CLI, main
from lstm_pl.models import LanguageModelSettings, LearnedCache, WordLanguageModel

CONFIG = str(Path(__file__).parents[1] / "configs" / "shakespeare.yaml")
SPANS = ((0, 6), (6, 7), (7, 15), (15, 23))  # windows of uneven lengths, one of a single step


def windows(cache: LearnedCache, log_p_vocab, outputs, targets) -> torch.Tensor:
    """log p of every target, scored window after window with the memory carried."""
    memory, parts = None, []
    for start, end in SPANS:
        log_p, memory = cache(log_p_vocab[:, start:end], outputs[:, start:end], targets[:, start:end], memory)
        parts.append(log_p)
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("window", [1, 4, 40])
def test_untrained_it_is_the_continuous_cache(window):
    """W = 0, w = 0: the mixture of ``cache.CacheScore`` at θ = 1.5 and λ = 0.175 (λ's logit held
    in float32, hence the tolerance), word for word."""
    torch.manual_seed(0)
    outputs, targets = torch.randn(3, 23, 5, dtype=torch.float64), torch.randint(0, 4, (3, 23))
    log_p_vocab = torch.log(torch.rand(3, 23, dtype=torch.float64))
    cache = LearnedCache(5, window).double()
    log_p = windows(cache, log_p_vocab, outputs, targets)
    fixed = CacheScore(interpolation=0.175, theta=1.5, window=window)
    for start, end in SPANS:
        fixed.add(outputs[:, start:end], targets[:, start:end], log_p_vocab[:, start:end])
    assert torch.allclose(-log_p.sum(), fixed.total[0], rtol=1e-7)
    assert torch.equal(log_p[:, 0], log_p_vocab[:, 0])  # the first word of a stream: the softmax alone


def test_it_reads_only_the_words_before():
    """Changing the words from step t on leaves every earlier step's probability as it was, and
    the word a step predicts never points at itself."""
    torch.manual_seed(1)
    cache = LearnedCache(6, 50).double()
    with torch.no_grad():
        cache.query.weight.normal_()
        cache.gate.weight.normal_()
        cache.match_weight.fill_(3.0)
    outputs, targets = torch.randn(2, 23, 6, dtype=torch.float64), torch.randint(0, 3, (2, 23))
    log_p_vocab = torch.log(torch.rand(2, 23, dtype=torch.float64))
    before = windows(cache, log_p_vocab, outputs, targets)
    changed_outputs, changed_targets = outputs.clone(), targets.clone()
    changed_outputs[:, 12:] += 1.0
    changed_targets[:, 12:] = (changed_targets[:, 12:] + 1) % 3
    after = windows(cache, log_p_vocab, changed_outputs, changed_targets)
    assert torch.equal(before[:, :12], after[:, :12]) and not torch.equal(before[:, 12:], after[:, 12:])
    # Words seen nowhere before have only the softmax's share: log((1 - λ_t) p_vocab), the gate
    # λ_t = σ(w·h_t + c·m_t + b) written out, m_t the best cosine of q_t = h_t + W h_t with h_0..h_{t-1}.
    unseen = torch.tensor([[4, 5, 6, 7]])
    log_p, _ = cache(log_p_vocab[:1, :4], outputs[:1, :4], unseen)
    h = outputs[0, :4]
    queries = h + h @ cache.query.weight.T
    match = torch.stack([torch.nn.functional.cosine_similarity(queries[t], h[:t], dim=-1).max().clamp_min(0)
                         for t in range(1, 4)])
    gate = h[1:] @ cache.gate.weight[0] + cache.gate.bias + 3.0 * match
    assert match.max() > 0.5  # the match term counts here
    assert torch.allclose(log_p[0, 1:], torch.nn.functional.logsigmoid(-gate) + log_p_vocab[0, 1:4])


def test_next_word_is_a_distribution_that_agrees_with_training():
    """``next_word`` (what ``generate`` samples from) sums to 1 over the vocabulary and gives each
    target the probability the training loss gives it."""
    torch.manual_seed(2)
    vocabulary, window = 9, 7
    cache = LearnedCache(4, window).double()
    with torch.no_grad():
        cache.query.weight.normal_()
        cache.gate.weight.normal_()
        cache.match_weight.fill_(-2.0)
    outputs, targets = torch.randn(2, 15, 4, dtype=torch.float64), torch.randint(0, vocabulary, (2, 15))
    log_p_all = torch.log_softmax(torch.randn(2, 15, vocabulary, dtype=torch.float64), dim=-1)
    log_p, _ = cache(log_p_all.gather(-1, targets[..., None]).squeeze(-1), outputs, targets)
    for t in range(1, 15):
        memory = (outputs[:, :t], targets[:, :t])
        whole = cache.next_word(log_p_all[:, t], outputs[:, t], memory)
        assert torch.allclose(whole.exp().sum(-1), torch.ones(2, dtype=torch.float64))
        assert torch.allclose(whole.gather(-1, targets[:, t:t + 1]).squeeze(-1), log_p[:, t])


def test_generation_repeats_what_the_cache_points_at():
    """With the gate open and a sharp pointer, greedy generation continues a prompt with the word
    that followed the most similar state: the cache's mixture is what is sampled, not the softmax."""
    torch.manual_seed(3)
    net = WordLanguageModel(LanguageModelSettings(vocab_size=11, hidden_size=8, embedding_size=8, learned_cache_window=20)).eval()
    with torch.no_grad():
        net.cache.gate.bias.fill_(20.0)  # λ ≈ 1: the cache alone
        net.cache.theta.fill_(50.0)
        net.decoder.bias.fill_(0.0)
        net.decoder.bias[10] = 30.0  # the softmax alone would always say word 10
    prompt = torch.tensor([3, 5, 7, 3, 5, 7, 3])
    words = net.generate(prompt, steps=4, temperature=0)
    assert 10 not in words.tolist()
    assert set(words.tolist()) <= {5, 7, 3}
    plain = WordLanguageModel(LanguageModelSettings(vocab_size=11, hidden_size=8, embedding_size=8)).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("cache.")})
    assert plain.generate(prompt, steps=4, temperature=0).tolist() == [10] * 4


def test_a_language_model_trains_and_scores_with_it(tmp_path, corpus_args):
    """Through the CLI: the memory rides in the carried state (window after window, in training and
    validation), the cache's parameters learn, and the validation's perplexity is the mixture's:
    the net's own ``score`` over the validation windows gives the logged value."""
    cli = CLI(args=["--config", CONFIG, *corpus_args, "--trainer.max_steps=8", "--trainer.logger=false",
                    "--trainer.limit_val_batches=3",
                    "--data.init_args.seq_len=10", "--model.init_args.net.learned_cache_window=15",
                    f"--trainer.default_root_dir={tmp_path}"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    net = cli.model.net
    assert net.cache.theta.item() != 1.5 and net.cache.query.weight.abs().sum() > 0  # it learned
    assert net.cache.match_weight.item() != 0
    state, memory = cli.model.states["train"]
    assert memory[0].shape[1] == 15 and not memory[0].requires_grad
    logged = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]["val/perplexity"]
    net.eval()
    carried, total, count = None, 0.0, 0
    with torch.no_grad():
        for batch_index, (x, y) in enumerate(cli.datamodule.val_dataloader()):
            if batch_index == 3:
                break
            log_p, carried, _, _ = net.score(x, y, carried)
            total, count = total - log_p.sum().item(), count + y.numel()
    assert math.isclose(logged, math.exp(total / count), rel_tol=1e-5)


def test_a_checkpoint_from_before_the_match_weight_evaluates_as_it_was(tmp_path, corpus_args, capsys):
    """A checkpoint written before the gate read the match (no ``net.cache.match_weight``) is that
    model with c = 0: ``test`` scores it as the same checkpoint with c set to 0 does. Resuming it is
    one line, exit 2, before anything is written: its run folder is left as it was."""
    small = ["--config", CONFIG, *corpus_args, "--data.init_args.seq_len=10", "--trainer.limit_val_batches=2",
             "--trainer.limit_test_batches=2", "--model.init_args.net.learned_cache_window=15",
             f"--trainer.logger.init_args.save_dir={tmp_path}"]
    main(["fit", *small, "--trainer.max_steps=3"])
    run = tmp_path / "shakespeare" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    checkpoint["state_dict"]["net.cache.match_weight"].zero_()
    torch.save(checkpoint, tmp_path / "zero.ckpt")
    del checkpoint["state_dict"]["net.cache.match_weight"]
    torch.save(checkpoint, last)
    scores = []
    for path in (tmp_path / "zero.ckpt", last):
        main(["test", *small, f"--ckpt_path={path}"])
        scores.append(CLI.latest.trainer.callback_metrics["test/perplexity"].item())
    assert scores[0] == scores[1]
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *small, "--trainer.max_steps=4", f"--ckpt_path={last}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stopped.value.code == 2 and len(errors) == 1 and "before its gate read the match" in errors[0], errors
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_product_past_half_precision_stays_finite(dtype):
    """Under autocast, a query·key product past float16's range (inf) counts as a perfect match:
    every log p stays finite (with c at 0, where 0·inf would be NaN, and with c learned)."""
    torch.manual_seed(0)
    cache = LearnedCache(8, 50)
    outputs, targets = torch.randn(1, 6, 8) * 200, torch.randint(0, 5, (1, 6))
    log_p_vocab = torch.log(torch.rand(1, 6))
    for c in (0.0, 3.0):
        with torch.no_grad():
            cache.match_weight.fill_(c)
        with torch.autocast("cpu", dtype=dtype):
            log_p, _ = cache(log_p_vocab, outputs, targets)
        assert torch.isfinite(log_p).all(), (c, log_p)
