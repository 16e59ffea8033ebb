"""Ensembles of language models (``lstm_pl/ensemble.py``): the logged perplexity is that of the mean
of the members' distributions, each member carrying its own state (and learned-cache memory) as it
does alone, computed here independently from each model's own logits; a model with itself is the
model; bad members are one line before anything is scored."""

import math
from pathlib import Path

import pytest
import torch

from lstm_pl.cli import CLI, main
from lstm_pl.generate import load_run

CONFIG = str(Path(__file__).parents[1] / "configs" / "shakespeare.yaml")
SINE = str(Path(__file__).parents[1] / "configs" / "sine.yaml")


def small(tmp_path, corpus_args) -> list[str]:
    return ["--config", CONFIG, *corpus_args, "--data.init_args.seq_len=10", "--trainer.limit_val_batches=2",
            "--trainer.limit_test_batches=3", f"--trainer.logger.init_args.save_dir={tmp_path}"]


@pytest.fixture(scope="module")
def members(tmp_path_factory, corpus_args) -> tuple[list[str], list[Path]]:
    """Two short runs on one corpus: a plain model (seed 1) and one with a learned cache (seed 2)."""
    tmp_path = tmp_path_factory.mktemp("ensemble")
    args = small(tmp_path, corpus_args)
    main(["fit", *args, "--trainer.max_steps=6", "--seed_everything=1"])
    main(["fit", *args, "--trainer.max_steps=6", "--seed_everything=2", "--model.init_args.net.learned_cache_window=15"])
    runs = [tmp_path / "shakespeare" / f"version_{n}" / "checkpoints" / "last.ckpt" for n in (0, 1)]
    return args, runs


def mixture_by_hand(checkpoints: list[Path], datamodule, batches: int, unknown_id: int) -> tuple[float, float]:
    """exp of the mean NLL of p = mean_m p_m over the first test windows (all words, and without
    <unk>): the plain model's p from the softmax of its logits, the cached one's from its score."""
    tasks = [load_run(path)[0] for path in checkpoints]
    nets, stateful = [task.net for task in tasks], [task.hparams.stateful for task in tasks]
    states = [None] * len(nets)
    nll, words, nll_known, known = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for index, (x, y) in enumerate(datamodule.test_dataloader()):
            if index == batches:
                break
            probabilities = []
            for m, net in enumerate(nets):
                states[m] = states[m] if stateful[m] else None
                if net.cache is None:
                    logits, states[m] = net(x, states[m])
                    probabilities.append(torch.softmax(logits.double(), -1).gather(-1, y[..., None])[..., 0])
                else:
                    log_p, states[m], _, _ = net.score(x, y, states[m])
                    probabilities.append(log_p.double().exp())
            log_mixed = torch.stack(probabilities).mean(0).log()
            nll, words = nll - log_mixed.sum().item(), words + y.numel()
            nll_known, known = nll_known - log_mixed[y != unknown_id].sum().item(), known + (y != unknown_id).sum().item()
    return math.exp(nll / words), math.exp(nll_known / known)


def test_the_ensemble_is_the_mean_of_the_distributions(members, capsys):
    """``test`` of one model with the other as a member logs the perplexity of the mean of the two
    distributions, per word, over all words and over those not <unk>, and names its members; the
    model's own metrics are unchanged by it."""
    args, (plain, cached) = members
    main(["test", *args, f"--ckpt_path={plain}"])
    alone = CLI.latest.trainer.callback_metrics["test/perplexity"].item()
    capsys.readouterr()
    main(["test", *args, f"--ckpt_path={plain}", f"--ensemble.checkpoints=[{cached}]"])
    assert f"ensemble: the evaluated model and {cached}" in capsys.readouterr().out
    metrics = CLI.latest.trainer.callback_metrics
    expected, expected_known = mixture_by_hand([plain, cached], CLI.latest.datamodule, 3,
                                               CLI.latest.model.hparams.unknown_id)
    assert math.isclose(metrics["test/perplexity_ensemble"].item(), expected, rel_tol=1e-5)
    assert math.isclose(metrics["test/perplexity_ensemble_without_unk"].item(), expected_known, rel_tol=1e-5)
    assert metrics["test/perplexity"].item() == alone
    assert expected < alone  # two different models: the mixture is not either one


@pytest.mark.parametrize("which", [0, 1])
def test_a_model_with_itself_is_the_model(members, which):
    """p with itself is p: the member's carried state and memory follow the evaluated model's
    exactly, window after window (a member scored from zeros each window would differ)."""
    args, runs = members
    main(["validate", *args, f"--ckpt_path={runs[which]}", f"--ensemble.checkpoints=[{runs[which]}]"])
    metrics = CLI.latest.trainer.callback_metrics
    assert math.isclose(metrics["val/perplexity_ensemble"].item(), metrics["val/perplexity"].item(), rel_tol=1e-6)
    assert math.isclose(metrics["val/perplexity_ensemble_without_unk"].item(),
                        metrics["val/perplexity_without_unk"].item(), rel_tol=1e-6)


def test_each_member_carries_its_state_as_it_does_alone(members):
    """A member trained to start every window from zeros (``stateful: false``) is scored so, beside
    an evaluated model that carries its state."""
    args, (plain, _) = members
    checkpoint = torch.load(plain, weights_only=True)
    checkpoint["hyper_parameters"]["stateful"] = False
    stateless = plain.parent / "stateless.ckpt"  # in a run folder (its tokenizer), as load_run reads it
    torch.save(checkpoint, stateless)
    main(["test", *args, f"--ckpt_path={plain}", f"--ensemble.checkpoints=[{stateless}]"])
    metrics = CLI.latest.trainer.callback_metrics
    expected, _ = mixture_by_hand([plain, stateless], CLI.latest.datamodule, 3, CLI.latest.model.hparams.unknown_id)
    assert math.isclose(metrics["test/perplexity_ensemble"].item(), expected, rel_tol=1e-5)
    assert not math.isclose(expected, metrics["test/perplexity"].item(), rel_tol=1e-4)  # the state matters here


def test_fit_does_not_score_the_ensemble(members, tmp_path):
    """The members are fixed while the model trains: fit's validations leave them out."""
    args, (plain, _) = members
    main(["fit", *args, "--trainer.max_steps=2", f"--trainer.logger.init_args.save_dir={tmp_path}",
          f"--ensemble.checkpoints=[{plain}]"])
    assert not any("ensemble" in name for name in CLI.latest.trainer.callback_metrics)


def test_bad_members_are_one_line(members, tmp_path, capsys):
    """A missing file, another task's checkpoint, a member of another vocabulary, an ensemble on a
    task that is not a language model: each one line naming ensemble.checkpoints, exit 2."""
    args, (plain, _) = members
    sine_args = ["--config", SINE, f"--trainer.logger.init_args.save_dir={tmp_path}"]
    main(["fit", *sine_args, "--trainer.max_steps=1"])
    sine = tmp_path / "sine" / "version_0" / "checkpoints" / "last.ckpt"
    other_args = [*args, "--data.init_args.min_count=2", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    main(["fit", *other_args, "--trainer.max_steps=1"])
    other = tmp_path / "shakespeare" / "version_0" / "checkpoints" / "last.ckpt"
    cases = [(args, plain, tmp_path / "missing.ckpt", "no such file"),
             (args, plain, sine, "not a language model's"),
             (other_args, other, plain, "another vocabulary"),
             (sine_args, sine, plain, "is not one")]
    for case_args, ckpt, member, reason in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            main(["test", *case_args, f"--ckpt_path={ckpt}", f"--ensemble.checkpoints=[{member}]"])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert stopped.value.code == 2 and len(errors) == 1, errors
        assert "ensemble.checkpoints" in errors[0] and reason in errors[0], errors
