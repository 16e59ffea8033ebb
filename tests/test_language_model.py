"""The word language model: every cell plugs in, the state is carried and detached across windows,
a short fit on Shakespeare lowers the loss, and generation is deterministic for a seed."""

import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_pl import CELLS, ConfigError, LanguageModelSettings, LanguageModelTask, LossCurves, WordLanguageModel
from lstm_pl.cli import CLI
from lstm_pl.generate import generate, load_run, main
from lstm_pl.text import StreamWindows

CONFIG = str(Path(__file__).parents[1] / "configs" / "shakespeare.yaml")


def settings(**values) -> LanguageModelSettings:
    return LanguageModelSettings(**values)


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_plugs_in(cell):
    net = WordLanguageModel(settings(vocab_size=50, embedding_size=8, cell=cell, hidden_size=6, num_layers=2, dropout=0.1))
    logits, state = net(torch.randint(0, 50, (3, 7)))
    assert logits.shape == (3, 7, 50)
    for part in state if isinstance(state, tuple) else (state,):
        assert part.shape == (2, 3, 6)
    logits2, _ = net(torch.randint(0, 50, (3, 4)), state)  # a state fed back in
    assert logits2.shape == (3, 4, 50)


def test_tf1_init_and_weight_tying():
    torch.manual_seed(0)
    net = WordLanguageModel(settings(vocab_size=3000, embedding_size=64, hidden_size=64, init="tf1"))
    assert net.embedding.weight.std().item() == pytest.approx(1.0, rel=0.05)  # tf.random_normal_initializer()
    assert net.decoder.weight.std().item() == pytest.approx(1.0, rel=0.05) and not net.decoder.bias.any()
    assert torch.all(net.rnn.bias_ih_l0[64:128] == 1.0)  # forget bias 1.0
    assert not net.rnn.bias_hh_l0.requires_grad  # one bias per gate, as TF
    tied = WordLanguageModel(settings(vocab_size=30, embedding_size=16, hidden_size=16, tie_weights=True))
    assert tied.decoder.weight is tied.embedding.weight
    assert sum(p.numel() for p in tied.parameters()) == 30 * 16 + sum(p.numel() for p in tied.rnn.parameters()) + 30
    with pytest.raises(ConfigError, match="model.init_args.net.tie_weights"):
        settings(vocab_size=30, embedding_size=16, hidden_size=8, tie_weights=True)
    with pytest.raises(ValueError, match="unknown cell 'gru'"):
        WordLanguageModel(settings(vocab_size=30, cell="gru"))


def test_uniform_init_and_locked_dropout():
    torch.manual_seed(0)
    net = WordLanguageModel(settings(vocab_size=500, embedding_size=32, hidden_size=32, init="tf1", uniform_init=0.1))
    for weight in (net.embedding.weight, net.decoder.weight):  # pytorch/examples' U(-0.1, 0.1), over tf1's N(0, 1)
        assert weight.abs().max() <= 0.1 and weight.std().item() == pytest.approx(0.1 / math.sqrt(3), rel=0.05)
    assert not net.decoder.bias.any() and torch.all(net.rnn.bias_ih_l0[32:64] == 1.0)  # the stack still tf1's
    locked = WordLanguageModel(settings(vocab_size=50, embedding_size=8, hidden_size=8, dropout=0.5, locked_dropout=True))
    x = torch.ones(4, 6, 8)
    masked = locked.dropout.train()(x)
    assert torch.equal(masked, masked[:, :1].expand_as(masked))  # one mask per sequence, shared over the steps
    assert set(masked.unique().tolist()) == {0.0, 2.0} and not torch.equal(masked[0], masked[1])
    assert torch.equal(locked.dropout.eval()(x), x)
    per_step = WordLanguageModel(settings(vocab_size=50, embedding_size=8, hidden_size=8, dropout=0.5)).dropout.train()(x)
    assert not torch.equal(per_step, per_step[:, :1].expand_as(per_step))


def windows(vocab=40, batch=3, steps=4, count=3):
    torch.manual_seed(1)
    return StreamWindows(torch.randint(0, vocab, (batch * (steps * count + 1),)).numpy(), batch, steps)


@pytest.mark.parametrize("cell", ["lstm", "rnn", "lstm_cec"])
def test_state_is_carried_and_detached(cell):
    task = LanguageModelTask(settings(vocab_size=40, embedding_size=8, cell=cell, hidden_size=8))
    data = windows()
    task.on_train_epoch_start()
    loss0 = task.batch_loss(data[0])
    carried = task.states["train"]
    parts = carried if isinstance(carried, tuple) else (carried,)
    assert all(not p.requires_grad and p.grad_fn is None for p in parts)  # detached
    _, expected_state = task.net(data[0][0])
    for part, expected in zip(parts, expected_state if isinstance(expected_state, tuple) else (expected_state,)):
        torch.testing.assert_close(part, expected.detach())
    loss0.backward()
    loss1 = task.batch_loss(data[1])
    loss1.backward()  # would fail ("backward through the graph a second time") if the state were not detached
    x1, y1 = data[1]
    logits, _ = task.net(x1, carried)
    assert loss1.item() == pytest.approx(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y1.flatten()).item())
    fresh, _ = task.net(x1)
    assert loss1.item() != pytest.approx(torch.nn.functional.cross_entropy(fresh.flatten(0, 1), y1.flatten()).item())
    task.on_train_epoch_start()
    assert task.states["train"] is None  # every epoch starts from zeros

    stateless = LanguageModelTask(settings(vocab_size=40, embedding_size=8, cell=cell, hidden_size=8), stateful=False)
    stateless.net.load_state_dict(task.net.state_dict())
    stateless.batch_loss(data[0])
    loss = stateless.batch_loss(data[1])
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(fresh.flatten(0, 1), y1.flatten()).item())


class RecordingTask(LanguageModelTask):
    """Notes, per stage and step, whether the window started from a carried state."""

    def setup(self, stage):
        self.started_carried = getattr(self, "started_carried", [])

    def window(self, batch, stage):
        self.started_carried.append((stage, self.states.get(stage) is not None))
        return super().window(batch, stage)


PROMPT = "Douvi gealou filipu, Xyzzy"  # three words of the generated corpus, and one it has not


@pytest.fixture(scope="module")
def short_fit(tmp_path_factory, corpus_args):
    """configs/shakespeare.yaml through the CLI, shrunk to seconds: hidden 32, batches of 32
    windows of 20 words, lr 0.01, 3 epochs of 12 windows, 4 validation windows."""
    save_dir = tmp_path_factory.mktemp("runs")
    cli = CLI(args=["--config", CONFIG, f"--trainer.logger.init_args.save_dir={save_dir}", "--trainer.max_epochs=3",
                    "--trainer.limit_train_batches=12", "--trainer.limit_val_batches=4", "--trainer.log_every_n_steps=1",
                    "--trainer.inference_mode=false",  # metric states made under inference mode cannot be fit's
                    "--model.class_path=test_language_model.RecordingTask", "--optimizer.init_args.lr=0.01",
                    "--model.init_args.net.embedding_size=32", "--model.init_args.net.hidden_size=32",
                    *corpus_args, "--data.init_args.batch_size=32", "--data.init_args.seq_len=20"], run=False)
    before = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
    cli.model.started_carried.clear()
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli, before


def test_short_fit_lowers_the_loss(short_fit):
    cli, before = short_fit
    after = cli.trainer.callback_metrics
    assert before["val/perplexity"] == pytest.approx(math.exp(before["val/loss"]), rel=1e-4)
    assert after["val/loss"] < before["val/loss"] - 1.0
    assert after["val/perplexity"] == pytest.approx(math.exp(after["val/loss"]), rel=1e-4)
    assert {"train/loss", "train/perplexity"} <= set(after)  # one tag scheme: each step's, as every task logs
    events = EventAccumulator(str(cli.trainer.log_dir))
    events.Reload()
    learning_rate = events.Scalars("train/lr-Adam")  # LearningRateMonitor, in the train group, once an epoch
    assert [point.value for point in learning_rate] == pytest.approx([0.01] * 3)
    assert not [tag for tag in events.Tags()["scalars"] if not tag.startswith(("train/", "val/"))]
    assert cli.model.hparams.net["vocab_size"] == cli.datamodule.vocab_size == 1234  # linked from the data
    assert cli.model.hparams.unknown_id == cli.datamodule.tokenizer.token_to_id("<unk>")  # linked from the data
    assert after["val/perplexity_without_unk"] > 1 and "val/perplexity_without_unk" in before
    # state carried within each epoch of each stage, reset at each epoch start
    records = cli.model.started_carried
    train = [carried for stage, carried in records if stage == "train"]
    assert train == ([False] + [True] * 11) * 3
    val = [carried for stage, carried in records if stage == "val"]
    assert val == [False, True] + [False, True, True, True] * 3  # the sanity check, then 3 validations


def test_generation_is_deterministic_for_a_seed(short_fit, capsys):
    cli, _ = short_fit
    folder = Path(cli.trainer.log_dir)
    checkpoint = folder / "checkpoints" / "last.ckpt"
    assert (folder / "tokenizer.json").is_file()  # saved with the run
    task, tokenizer = load_run(folder)
    assert tokenizer.get_vocab() == cli.datamodule.tokenizer.get_vocab()
    first = generate(task, tokenizer, PROMPT, 20, temperature=1.0, top_k=50, seed=7)
    again = generate(task, tokenizer, PROMPT, 20, temperature=1.0, top_k=50, seed=7)
    other = generate(task, tokenizer, PROMPT, 20, temperature=1.0, top_k=50, seed=8)
    assert first == again and first != other
    words = first.split(" ")
    assert words[:4] == ["douvi", "gealou", "filipu", "<unk>"] and len(words) == 24
    assert "<unk>" not in words[4:]  # banned unless --allow_unknown
    greedy = generate(task, tokenizer, "douvi gealou rapoucou", 5, temperature=0)
    assert greedy == generate(task, tokenizer, "douvi gealou rapoucou", 5, temperature=0, seed=99)  # argmax: no randomness
    main(["--run", str(checkpoint), "--tokenizer", str(folder / "tokenizer.json"),
          "--prompt", PROMPT, "--words", "20", "--top_k", "50", "--seed", "7"])
    assert capsys.readouterr().out.strip() == first
    # Nucleus sampling: a nucleus too small to hold more than the most likely word is the greedy choice.
    assert generate(task, tokenizer, "douvi gealou rapoucou", 5, temperature=1.0, top_p=1e-9, seed=3) == greedy
    nucleus_text = generate(task, tokenizer, PROMPT, 20, temperature=1.0, top_p=0.9, seed=7)
    main(["--run", str(checkpoint), "--prompt", PROMPT, "--words", "20", "--top_p", "0.9", "--seed", "7"])
    assert capsys.readouterr().out.strip() == nucleus_text != first
    with pytest.raises(SystemExit):
        main(["--run", str(checkpoint), "--prompt", PROMPT, "--top_p", "0"])
    assert capsys.readouterr().err.strip() == "lstm_pl.generate: error: --top_p must be in (0, 1], got 0.0"


def test_the_nucleus_is_the_fewest_most_likely_words_reaching_top_p():
    from lstm_pl.models import nucleus

    scores = torch.tensor([0.30, 0.05, 0.50, 0.15]).log()
    kept = lambda top_p: torch.isfinite(nucleus(scores, top_p)).nonzero().flatten().tolist()
    assert kept(0.5) == [2] and kept(0.51) == [0, 2] and kept(0.8) == [0, 2] and kept(0.81) == [0, 2, 3]
    assert kept(1.0) == [0, 1, 2, 3] and kept(1e-9) == [2]


@pytest.mark.parametrize("broken, key", [("tokenizer.json", "--tokenizer"), ("last.ckpt", "--run")])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_generate_with_a_damaged_file_is_one_line(short_fit, tmp_path, capsys, broken, key, damage):
    cli, _ = short_fit
    folder = Path(cli.trainer.log_dir)
    files = {"tokenizer.json": folder / "tokenizer.json", "last.ckpt": folder / "checkpoints" / "last.ckpt"}
    bad = tmp_path / broken
    bad.write_bytes(files[broken].read_bytes()[:200] if damage == "truncated" else b"\x00\xffnot this" * 50)
    run = bad if broken == "last.ckpt" else files["last.ckpt"]
    tokenizer = bad if broken == "tokenizer.json" else files["tokenizer.json"]
    with pytest.raises(SystemExit) as exit_:
        main(["--run", str(run), "--tokenizer", str(tokenizer), "--prompt", PROMPT])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith(f"lstm_pl.generate: error: {key}: {bad} is not a readable"), lines


def test_test_from_checkpoint_rebuilds_the_net(short_fit, corpus_args, tmp_path):
    cli, _ = short_fit
    checkpoint = Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    tested = CLI(args=["test", "--config", CONFIG, f"--ckpt_path={checkpoint}",
                       f"--trainer.logger.init_args.save_dir={tmp_path}", *corpus_args])
    metrics = tested.trainer.callback_metrics
    assert tested.model.hparams.net["hidden_size"] == 32  # taken from the checkpoint
    assert metrics["test/perplexity"] == pytest.approx(math.exp(metrics["test/loss"]), rel=1e-4)
    assert metrics["test/loss"] < math.log(1234)
    with pytest.raises(ConfigError, match="vocabulary"):  # another vocabulary cannot load these weights
        CLI(args=["test", "--config", CONFIG, f"--ckpt_path={checkpoint}", f"--trainer.logger.init_args.save_dir={tmp_path}",
                  *corpus_args, "--data.init_args.min_count=3"])


@pytest.mark.parametrize("name, layers, lr", [("shakespeare", 1, 1e-3), ("shakespeare_multi", 3, 5e-4)])
def test_configs_are_the_recipe(config_path, shakespeare, name, layers, lr):
    cli = CLI(args=["--config", config_path(name), f"--data.init_args.path={shakespeare}"], run=False)
    net, data, trainer = cli.model.hparams.net, cli.datamodule, cli.trainer
    assert (net["num_layers"], net["embedding_size"], net["hidden_size"]) == (layers, 128, 128)
    assert cli.config.optimizer.init_args.lr == lr and cli.config.optimizer.class_path == "torch.optim.Adam"
    assert net["vocab_size"] == 2610 and net["cell"] == "lstm" and net["init"] == "tf1" and cli.model.hparams.stateful
    assert (data.batch_size, data.seq_len, data.min_count, data.keep_punctuation) == (100, 50, 6, False)
    assert data.sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert (trainer.max_epochs, trainer.gradient_clip_val, trainer.gradient_clip_algorithm) == (10, 4.5, "norm")
    assert trainer.logger.name == name


def test_optimizer_and_schedule_are_config(corpus_args, tmp_path):
    """LightningCLI's own optimizer and lr_scheduler groups: SGD with plateau annealing is a config
    away (pytorch/examples' recipe), and the rate is cut when val/loss stops falling."""
    cli = CLI(args=["fit", "--config", CONFIG, *corpus_args, "--data.init_args.seq_len=10",
                    "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.max_epochs=3",
                    "--model.init_args.net.hidden_size=16", "--model.init_args.net.embedding_size=16",
                    f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.callbacks=[]",
                    "--optimizer=torch.optim.SGD", "--optimizer.lr=1e6",  # diverges: val/loss cannot improve
                    "--lr_scheduler=ReduceLROnPlateau", "--lr_scheduler.monitor=val/loss",
                    "--lr_scheduler.patience=0", "--lr_scheduler.factor=0.25", "--non_finite.action=skip"])
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] < 1e6  # cut at least once


def test_the_loss_after_update_needs_a_recomputable_task():
    """LossCurves(after_update) evaluates a batch again after its update: the language model's loss
    depends on the state the window before carried in, so that is refused in one line."""
    task = LanguageModelTask(LanguageModelSettings(vocab_size=11, hidden_size=4, embedding_size=4))
    with pytest.raises(ConfigError, match="LossCurves.after_update .* LanguageModelTask's loss cannot be computed again"):
        LossCurves(after_update=True).setup(None, task, "fit")


def test_perplexity_without_unk_scores_only_the_known_targets():
    """exp of the mean cross-entropy over the targets that are not <unk>, token-weighted over windows."""
    torch.manual_seed(0)
    task = LanguageModelTask(LanguageModelSettings(vocab_size=7, hidden_size=4, embedding_size=4), stateful=False,
                             unknown_id=0)
    batches = [(torch.randint(0, 7, (2, 5)), torch.randint(0, 7, (2, 5))) for _ in range(3)]
    losses, counts = [], []
    with torch.no_grad():
        for x, y in batches:
            task.measure((x, y), "val")
            logits = task(x)[0].reshape(-1, 7)
            known = y.reshape(-1) != 0
            losses.append(torch.nn.functional.cross_entropy(logits[known], y.reshape(-1)[known]))
            counts.append(int(known.sum()))
    expected = math.exp(sum(l.item() * n for l, n in zip(losses, counts)) / sum(counts))
    assert task.metrics["val_perplexity_without_unk"].compute().item() == pytest.approx(expected, rel=1e-6)
    assert task.metrics["val_perplexity"].compute().item() != pytest.approx(expected, rel=1e-3)


def test_a_language_model_trains_without_a_logger(tmp_path, corpus_args):
    """--trainer.logger=false: the learning-rate monitor of the LM configs stands aside (Lightning's
    own would stop the run), and the run finishes."""
    cli = CLI(args=["fit", "--config", CONFIG, "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
                    "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                    "--model.init_args.net.hidden_size=8", "--model.init_args.net.embedding_size=8", *corpus_args])
    assert cli.trainer.state.finished and cli.trainer.global_step == 2
