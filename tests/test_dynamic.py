"""Dynamic evaluation (``lstm_pl/dynamic.py``): its computation against Krause et al.'s rule written
with explicit gradients, each window scored before it is learned from, the metrics the
``validate`` and ``test`` commands log (and ``fit`` does not), and the evaluated weights left as
they were (its settings refused where they cannot apply: tests/test_cache.py, with the cache's)."""

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lstm_pl.cli import CLI
from lstm_pl.dynamic import dynamic_nll
from lstm_pl.models import LanguageModelSettings, WordLanguageModel

CONFIG = str(Path(__file__).parents[1] / "configs" / "shakespeare.yaml")


def small_model(seed: int = 0) -> WordLanguageModel:
    torch.manual_seed(seed)
    settings = LanguageModelSettings(vocab_size=11, embedding_size=6, hidden_size=6, num_layers=2, dropout=0.3,
                                     tie_weights=True)
    return WordLanguageModel(settings).double()


def windows(seed: int = 1, count: int = 4, streams: int = 3, steps: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(0, 11, (streams, count * steps + 1), generator=generator)
    return [(text[:, k * steps:(k + 1) * steps], text[:, k * steps + 1:(k + 1) * steps + 1]) for k in range(count)]


def by_the_rule(net: WordLanguageModel, batches, lr: float, decay: float) -> tuple[float, dict]:
    """θ_{k+1} = θ_k - η ∇L_k(θ_k) + λ (θ_0 - θ_k), window k scored by θ_k: weights as a dict,
    gradients from torch.autograd.grad, the state carried and cut between windows."""
    net = copy.deepcopy(net).eval()
    theta0 = {name: p.detach().clone() for name, p in net.named_parameters() if p.requires_grad}  # not a frozen bias
    theta = {name: p.clone().requires_grad_() for name, p in theta0.items()}
    state, nll = None, 0.0
    for x, y in batches:
        logits, state = torch.func.functional_call(net, theta, (x, state))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        nll += loss.item() * y.numel()
        grads = torch.autograd.grad(loss, list(theta.values()))
        theta = {name: (t - lr * g + decay * (theta0[name] - t)).detach().requires_grad_()
                 for (name, t), g in zip(theta.items(), grads)}
        state = tuple(part.detach() for part in state)
    return nll, theta


@pytest.mark.parametrize("lr, decay", [(0.5, 0.0), (2.0, 0.1)])
def test_the_computation_is_the_rule_window_by_window(lr, decay):
    """The same summed NLL as the rule with explicit gradients, and the copy left at the rule's
    last weights; the tied embedding and decoder are one parameter, updated once a window, and a
    parameter that does not train (the second LSTM bias, frozen at zero) stays as it is."""
    net, batches = small_model(), windows()
    expected_nll, expected_theta = by_the_rule(net, batches, lr, decay)
    adapted = copy.deepcopy(net)
    total = dynamic_nll(adapted, batches, lr, decay)
    assert total[1].item() == sum(y.numel() for _, y in batches)
    assert total[0].item() == pytest.approx(expected_nll, rel=1e-12)
    for name, parameter in adapted.named_parameters():
        assert torch.allclose(parameter, expected_theta.get(name, parameter), rtol=1e-10, atol=1e-12), name


def test_each_window_is_scored_before_it_is_learned_from():
    """A single window scores as the plain model does, whatever the rate: nothing it holds has
    been learned yet. The windows after it score differently."""
    net, batches = small_model(), windows()
    with torch.no_grad():
        logits, _ = copy.deepcopy(net).eval()(batches[0][0])
        plain = F.cross_entropy(logits.reshape(-1, 11), batches[0][1].reshape(-1), reduction="sum").item()
    assert dynamic_nll(copy.deepcopy(net), batches[:1], lr=50.0, decay=0.0)[0].item() == pytest.approx(plain, rel=1e-12)
    assert dynamic_nll(copy.deepcopy(net), batches, lr=1.0, decay=0.0)[0].item() != pytest.approx(
        dynamic_nll(copy.deepcopy(net), batches, lr=1e-12, decay=0.0)[0].item(), rel=1e-6)


def test_validate_and_test_log_it_and_leave_the_weights_alone(tmp_path, corpus_args):
    """``validate`` and ``test`` log ``…/perplexity_dynamic`` (with the cache on, also
    ``…_dynamic_with_cache``): the value ``dynamic_nll`` gives over the batches the evaluation
    scored; a model untrained on the generated corpus, whose names recur, learns from it within the
    text (lower than the plain perplexity); the evaluated weights are unchanged afterwards."""
    cli = CLI(args=["--config", CONFIG, f"--trainer.logger.init_args.save_dir={tmp_path}", *corpus_args,
                    "--trainer.limit_val_batches=6", "--trainer.limit_test_batches=4",
                    "--model.init_args.net.embedding_size=16", "--model.init_args.net.hidden_size=16",
                    "--data.init_args.seq_len=12", "--dynamic_eval.lr=1.0", "--cache.interpolation=0.3"], run=False)
    before = {name: value.clone() for name, value in cli.model.state_dict().items()}
    metrics = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
    expected = dynamic_nll(copy.deepcopy(cli.model.net), list(cli.datamodule.val_dataloader())[:6], lr=1.0, decay=0.0)
    assert metrics["val/perplexity_dynamic"] == pytest.approx(math.exp(expected[0] / expected[1]), rel=1e-5)
    assert metrics["val/perplexity_dynamic"] < 0.9 * metrics["val/perplexity"]
    assert "val/perplexity_dynamic_with_cache" in metrics
    tested = cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]
    assert {"test/perplexity_dynamic", "test/perplexity_dynamic_with_cache"} <= set(tested)
    after = cli.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_fit_does_not_spend_its_validations_on_it(tmp_path, corpus_args):
    cli = CLI(args=["--config", CONFIG, f"--trainer.logger.init_args.save_dir={tmp_path}", *corpus_args,
                    "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
                    "--model.init_args.net.embedding_size=16", "--model.init_args.net.hidden_size=16",
                    "--dynamic_eval.lr=1.0"], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert "val/perplexity" in cli.trainer.callback_metrics
    assert "val/perplexity_dynamic" not in cli.trainer.callback_metrics


def test_scorers_that_are_off_take_no_part_in_the_run(tmp_path):
    """Lightning calls every callback's hooks at every step: the cache and dynamic evaluation,
    off in ``configs/base.yaml``, are left out of the Trainer's callbacks; on, they are in."""
    from lstm_pl.cache import NeuralCache
    from lstm_pl.dynamic import DynamicEvaluation

    def scorers(*extra):
        cli = CLI(args=["--config", CONFIG, f"--trainer.logger.init_args.save_dir={tmp_path}", *extra], run=False)
        return {type(c) for c in cli.trainer.callbacks if isinstance(c, (NeuralCache, DynamicEvaluation))}

    assert scorers() == set()
    assert scorers("--cache.interpolation=0.2", "--dynamic_eval.lr=1") == {NeuralCache, DynamicEvaluation}

