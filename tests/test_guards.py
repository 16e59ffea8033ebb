"""Guards that no other test checks: a skipped non-finite step leaves the weights and the
optimizer's state exactly as they were, a run resumed with gradient accumulation is the
uninterrupted run (the data position counts micro-batches), and the few other things a one-line
mutant of a core module got past the rest of the suite with (each test here kills one)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from test_resume import scalars  # TensorBoard scalars in the order written, as the resume tests read them

from lstm_pl.cli import CLI, main
from lstm_pl.runtime import quiet
from lstm_pl.tasks import RegressionTask

ROOT = Path(__file__).resolve().parents[1]
ADDING = ["--data.init_args.t=20", "--data.init_args.n_sequence=300"]


def leaves(value, place=()):
    """Every leaf of a (nested) state, tensors and plain values, in a fixed order, with its place."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from leaves(value[key], (*place, key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from leaves(item, (*place, i))
    else:
        yield place, value


def same(x, y) -> bool:
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype
                and x.shape == y.shape and torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)))
    return type(x) is type(y) and x == y


def identical(a, b) -> bool:
    """Bit for bit: the same places, and at each the same dtype, shape and bytes (or plain value)."""
    a, b = list(leaves(a)), list(leaves(b))
    return [p for p, _ in a] == [p for p, _ in b] and all(same(x, y) for (_, x), (_, y) in zip(a, b))


class Snapshots(pl.Callback):
    """The parameters and the optimizer's state before and after every training step."""

    def __init__(self):
        self.before, self.after = {}, {}

    @staticmethod
    def take(trainer, pl_module):
        optimizer = trainer.optimizers[0]
        return {"parameters": [p.detach().clone() for p in pl_module.parameters()],
                "state": copy.deepcopy([optimizer.state[p] for p in pl_module.parameters()])}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before[trainer.global_step] = self.take(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step - 1] = self.take(trainer, pl_module)


NAN_AT = (0, 3)  # steps (0-based) whose training loss is NaN: the very first, and one with Adam's moments set


OPTIMIZERS = {"TFAdam": ["--optimizer.class_path=lstm_pl.optim.TFAdam"],
              "Adam": ["--optimizer.class_path=torch.optim.Adam"],
              "fused Adam": ["--optimizer.class_path=torch.optim.Adam", "--optimizer.init_args.fused=true"]}


def skipping_run(optimizer: str, check: str, tmp_path: Path, monkeypatch, steps: int = 6, nan_at=NAN_AT,
                 *overrides: str) -> tuple[CLI, Snapshots]:
    """sine for ``steps`` steps under ``non_finite.action=skip`` and ``check``, with a NaN training
    loss at the 0-based steps ``nan_at``; the parameters and optimizer state around every step."""
    original = RegressionTask.batch_loss

    def nan_at_chosen_steps(self, batch):
        loss = original(self, batch)
        return loss * float("nan") if self.training and self.trainer.global_step in nan_at else loss

    monkeypatch.setattr(RegressionTask, "batch_loss", nan_at_chosen_steps)
    quiet()
    cli = CLI(args=["--config", str(ROOT / "configs" / "sine.yaml"), f"--trainer.max_steps={steps}", "--non_finite.action=skip",
                    f"--non_finite.check={check}", "--trainer.logger=false", "--trainer.callbacks=[]",
                    f"--trainer.default_root_dir={tmp_path}", *OPTIMIZERS[optimizer], *overrides], run=False)
    snapshots = Snapshots()
    cli.trainer.callbacks.append(snapshots)
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli, snapshots


@pytest.mark.parametrize("optimizer", ["TFAdam", "Adam", "fused Adam"])
def test_a_skipped_step_moves_nothing(optimizer, tmp_path, monkeypatch):
    """non_finite.action=skip: after a skipped step every parameter and every optimizer state
    tensor (moments, step count, TF's β powers) is bit for bit what it was before it; after every
    other step the parameters and the step count (or β powers) have moved. Zeroing the gradients
    instead of dropping them would still move Adam (its moments, its step count)."""
    cli, snapshots = skipping_run(optimizer, "host", tmp_path, monkeypatch)
    assert cli.trainer.global_step == 6 and sorted(snapshots.after) == list(range(6))
    skip = next(c for c in cli.trainer.callbacks if type(c).__name__ == "NonFiniteLoss")
    assert skip.skipped == len(NAN_AT) and not skip.on_device
    for step in range(6):
        before, after = snapshots.before[step], snapshots.after[step]
        if step in NAN_AT:
            assert identical(before["parameters"], after["parameters"]), f"step {step}: a parameter moved"
            assert identical(before["state"], after["state"]), f"step {step}: the optimizer's state moved"
        else:
            trainable = [p.requires_grad for p in cli.model.parameters()]
            assert all(not torch.equal(b, a) for b, a, t in zip(before["parameters"], after["parameters"], trainable) if t), step
            counters = ("beta1_power", "beta2_power") if optimizer == "TFAdam" else ("step",)
            for b, a, t in zip(before["state"], after["state"], trainable):
                if not t:
                    continue
                assert all(key not in b or not torch.equal(b[key], a[key]) for key in counters), step
                assert set(counters) <= a.keys()
    assert snapshots.after[0]["state"] == [{}] * len(snapshots.after[0]["state"])  # step 0 skipped: no state made


@pytest.mark.parametrize("optimizer", ["TFAdam", "fused Adam"])
def test_steps_skipped_on_the_device_are_the_steps_skipped_on_the_host(optimizer, tmp_path, monkeypatch):
    """non_finite.check=device (the optimizer told through ``found_inf``, nothing read back per
    step): every step's parameters bit for bit those of the host's check, and the same optimizer
    state where the host made one (the device's first step, skipped, makes an untouched one)."""
    host, on_host = skipping_run(optimizer, "host", tmp_path / "host", monkeypatch)
    device, on_device = skipping_run(optimizer, "device", tmp_path / "device", monkeypatch,
                                     6, NAN_AT, "--non_finite.device_check_every=4")
    guards = [next(c for c in cli.trainer.callbacks if type(c).__name__ == "NonFiniteLoss") for cli in (host, device)]
    assert [guard.on_device for guard in guards] == [False, True]
    assert guards[1].skipped == guards[0].skipped == len(NAN_AT)
    for step in range(6):
        assert identical(on_host.after[step]["parameters"], on_device.after[step]["parameters"]), step
        for made, kept in zip(on_host.after[step]["state"], on_device.after[step]["state"]):
            assert identical(made, kept) if made else all(not value.any() for key, value in kept.items()
                                                         if key in ("m", "v", "exp_avg", "exp_avg_sq", "step")), step


def test_the_device_check_reads_nothing_back_in_a_step(tmp_path, monkeypatch):
    """non_finite.check=device: the guard's per-step hooks make no host synchronisation (no
    ``bool``, ``item``, ``float``, ``int`` or ``tolist`` of a tensor); it reads the device every
    ``device_check_every`` steps (and before a validation, at a checkpoint and at the end)."""
    from lstm_pl.guards import DeviceFlags, NonFiniteLoss

    reads = []

    def forbidden(name):
        def read(*args, **kwargs):
            raise AssertionError(f"the device check read a tensor back ({name}) inside a step")
        return read

    def without_reads(hook):
        def wrapped(*args, **kwargs):
            saved = {name: getattr(torch.Tensor, name) for name in ("__bool__", "item", "__float__", "__int__", "tolist")}
            for name in saved:
                monkeypatch.setattr(torch.Tensor, name, forbidden(name))
            try:
                return hook(*args, **kwargs)
            finally:
                for name, value in saved.items():
                    monkeypatch.setattr(torch.Tensor, name, value)
        return wrapped

    for hook in ("on_before_backward", "on_before_optimizer_step"):
        monkeypatch.setattr(NonFiniteLoss, hook, without_reads(getattr(NonFiniteLoss, hook)))
    original_read = DeviceFlags.read
    monkeypatch.setattr(DeviceFlags, "read", lambda self: reads.append(1) or original_read(self))
    cli, _ = skipping_run("TFAdam", "device", tmp_path, monkeypatch, 12, (2,), "--non_finite.device_check_every=4",
                          "--trainer.limit_val_batches=0")
    guard = next(c for c in cli.trainer.callbacks if type(c).__name__ == "NonFiniteLoss")
    assert cli.trainer.global_step == 12 and guard.skipped == 1
    assert 3 <= len(reads) <= 6, reads  # steps 4, 8 and 12, the end, the checkpoint's count


def test_a_non_finite_loss_stops_the_run_on_the_device_with_the_weights_before_it(tmp_path, monkeypatch, capsys):
    """non_finite.action=stop with check=device: the update of the first non-finite loss and every
    later one are dropped; the run stops when the host reads it (one line, exit 2), and its
    last.ckpt holds the weights and optimizer state the host's check stops with."""
    original = RegressionTask.batch_loss

    def nan_from_step_3(self, batch):
        loss = original(self, batch)
        return loss * float("nan") if self.training and self.trainer.global_step == 2 else loss

    monkeypatch.setattr(RegressionTask, "batch_loss", nan_from_step_3)
    lines = {}
    for check in ("host", "device"):
        with pytest.raises(SystemExit) as exit_:
            fit("sine", tmp_path / check, "--trainer.max_steps=10", "--trainer.callbacks=[]", f"--non_finite.check={check}",
                "--non_finite.device_check_every=5", "--trainer.limit_val_batches=0")
        lines[check] = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exit_.value.code == 2 and len(lines[check]) == 1, lines[check]
    assert "the training loss is nan at step 3 (the last finite one" in lines["host"][0]
    assert "at step 3 (the last finite one" in lines["device"][0] and "stopped at step 5" in lines["device"][0], lines
    assert lines["host"][0].split("at step 2")[0] == lines["device"][0].split("at step 2")[0]  # the same last finite loss
    saved = {check: torch.load(tmp_path / check / "sine" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
             for check in lines}
    assert saved["host"]["global_step"] == 2 and saved["device"]["global_step"] == 5
    assert identical(saved["host"]["state_dict"], saved["device"]["state_dict"])
    assert identical(saved["host"]["optimizer_states"][0]["state"], saved["device"]["optimizer_states"][0]["state"])


def test_the_device_check_needs_an_optimizer_that_takes_found_inf(tmp_path, capsys):
    """check=device with an optimizer that cannot skip its own step on the device: one line naming
    the key, exit 2, no checkpoint."""
    with pytest.raises(SystemExit) as exit_:
        fit("sine", tmp_path, "--non_finite.check=device", "--optimizer.class_path=torch.optim.SGD",
            "--optimizer.init_args.lr=0.1", "--trainer.max_steps=3")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1 and "non_finite.check: device" in lines[0] and "SGD" in lines[0], lines
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tfadam_skips_its_step_where_found_inf_says_so(dtype):
    """``TFAdam.found_inf``: 1 leaves the parameters, moments and β powers bit for bit (NaN
    gradients included); 0 is bit for bit the step without it."""
    from lstm_pl.optim import TFAdam

    torch.manual_seed(0)
    start = [torch.randn(5, 3, dtype=dtype), torch.randn(3, dtype=dtype)]
    gradients = [[torch.randn_like(p) for p in start] for _ in range(3)]

    def run(found_infs):
        params = [p.clone().requires_grad_() for p in start]
        optimizer = TFAdam(params, lr=0.01)
        for grads, found_inf in zip(gradients, found_infs):
            for p, g in zip(params, grads):
                p.grad = g.clone() if found_inf != 1.0 else torch.full_like(g, float("nan"))
            if found_inf is not None:
                optimizer.found_inf = torch.tensor(found_inf)
            elif hasattr(optimizer, "found_inf"):
                del optimizer.found_inf
            optimizer.step()
        return {"params": [p.detach() for p in params], "state": [optimizer.state[p] for p in params]}

    plain = run([None, None, None])
    assert identical(run([0.0, 0.0, 0.0]), plain)
    assert identical(run([None, 1.0]), run([None])) and identical(run([None, 1.0, 1.0]), run([None]))
    assert not identical(run([None, None]), run([None]))  # a step that is not skipped moves them


def fit(config: str, save_dir: Path, *overrides: str) -> Path:
    main(["fit", "--config", str(ROOT / "configs" / f"{config}.yaml"), f"--trainer.logger.init_args.save_dir={save_dir}",
          *overrides])
    return save_dir / config / "version_0"


def assert_same_run(resumed: Path, whole: Path, tag: str, total: int) -> None:
    """The same loss at every logged step and the same final weights and optimizer state."""
    exactly = lambda points: [(step, repr(value)) for step, value in points]  # a NaN equal to a NaN
    losses = exactly(scalars(resumed, tag))
    assert [step for step, _ in losses] == [step for step, _ in exactly(scalars(whole, tag))] and len(losses) >= total
    assert losses == exactly(scalars(whole, tag))
    final = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    expected = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == expected["global_step"] == total
    assert identical(final["state_dict"], expected["state_dict"])
    assert identical(final["optimizer_states"], expected["optimizer_states"])


@pytest.mark.parametrize("config, sampling, extra", [("sine", "original", []), ("adding", "with_replacement", ADDING)])
def test_a_resumed_run_with_accumulation_is_the_uninterrupted_run(config, sampling, extra, tmp_path):
    """accumulate_grad_batches=2: every optimizer step is two batches, so the position saved and
    skipped on resume must count batches, not steps."""
    settings = [f"--data.init_args.sampling={sampling}", "--trainer.accumulate_grad_batches=2",
                "--trainer.callbacks=[]", *extra]
    whole = fit(config, tmp_path / "whole", "--trainer.max_steps=8", *settings)
    parts = fit(config, tmp_path / "parts", "--trainer.max_steps=3", *settings)
    last = torch.load(parts / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 and last[f"{config.capitalize()}DataModule"]["batches_drawn"] == 6
    fit(config, tmp_path / "parts", "--trainer.max_steps=8", *settings, f"--ckpt_path={parts / 'checkpoints' / 'last.ckpt'}")
    assert_same_run(parts, whole, "train/loss", 8)


def write_text(path: Path, words: int = 4000) -> Path:
    """A generated text of a few dozen words, each frequent enough to be in the vocabulary."""
    generator = torch.Generator().manual_seed(0)
    vocabulary = [f"w{i}" for i in range(40)]
    ids = torch.randint(len(vocabulary), (words,), generator=generator).tolist()
    path.write_text("\n".join(" ".join(vocabulary[i] for i in ids[k : k + 12]) for k in range(0, words, 12)) + "\n")
    return path


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_language_model_resumed_with_accumulation_is_the_uninterrupted_run(dropout, tmp_path):
    """Epochs of 5 windows and accumulate_grad_batches=2: Lightning steps after windows 2, 4 and
    5 (the epoch's last), 3 steps an epoch, so steps × 2 is not the windows done in the epoch.
    Stopped in the middle of the second epoch and resumed: the uninterrupted run; with dropout its
    masks too (the random generator's state is in the checkpoint)."""
    text = write_text(tmp_path / "text.txt")
    settings = [f"--data.init_args.path={text}", "--data.init_args.url=null", "--data.init_args.sha256=null",
                f"--data.init_args.cache_dir={tmp_path / 'cache'}", "--data.init_args.batch_size=10",
                "--data.init_args.seq_len=10", "--data.init_args.min_count=1",
                "--model.init_args.net.hidden_size=16", "--model.init_args.net.embedding_size=16",
                "--trainer.limit_train_batches=5", "--trainer.limit_val_batches=2", "--trainer.max_epochs=-1",
                f"--model.init_args.net.dropout={dropout}",
                "--trainer.log_every_n_steps=1", "--trainer.accumulate_grad_batches=2", "--trainer.callbacks=[]"]
    whole = fit("shakespeare", tmp_path / "whole", "--trainer.max_steps=8", *settings)
    parts = fit("shakespeare", tmp_path / "parts", "--trainer.max_steps=4", *settings)
    last = torch.load(parts / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4 and last["TextDataModule"]["windows_done_in_epoch"] == 2
    fit("shakespeare", tmp_path / "parts", "--trainer.max_steps=8", *settings,
        f"--ckpt_path={parts / 'checkpoints' / 'last.ckpt'}")
    assert_same_run(parts, whole, "train/loss", 8)


class Batches(pl.Callback):
    """The inputs of every training micro-batch, in order."""

    def __init__(self):
        self.inputs: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.inputs.append(batch[0].detach().clone())


def adding_cli(tmp_path: Path, *overrides: str) -> tuple[CLI, Batches]:
    quiet()
    cli = CLI(args=["--config", str(ROOT / "configs" / "adding.yaml"), *ADDING, "--trainer.logger=false",
                    "--trainer.callbacks=[]", f"--trainer.default_root_dir={tmp_path}", "--trainer.accumulate_grad_batches=2",
                    "--trainer.val_check_interval=5", "--checkpoint.save_top_k=-1", *overrides], run=False)
    batches = Batches()
    cli.trainer.callbacks.append(batches)
    return cli, batches


def test_a_checkpoint_between_two_steps_resumes_at_the_next_batch(tmp_path):
    """A validation every 5 batches with accumulate_grad_batches=2 saves best-2.ckpt after batch 5,
    half-way through step 3. Resumed from it, the data goes on at batch 6, as Lightning's loop does
    (its accumulated gradient is not in the checkpoint, so step 3 is batch 6's alone): no batch is
    trained on twice and none is left out. (Steps × accumulation would say 4 and feed batch 5 again,
    putting every later step's pair one batch off.)"""
    cli, whole = adding_cli(tmp_path / "whole", "--trainer.max_steps=5")
    cli.trainer.fit(cli.model, cli.datamodule)
    assert len(whole.inputs) == 10
    best = tmp_path / "whole" / "checkpoints" / "best-2.ckpt"
    saved = torch.load(best, weights_only=True)
    assert saved["global_step"] == 2 and saved["AddingDataModule"]["batches_drawn"] == 5
    cli, resumed = adding_cli(tmp_path / "resumed", "--trainer.max_steps=5")
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(best))
    assert len(resumed.inputs) == 5 and all(torch.equal(a, b) for a, b in zip(resumed.inputs, whole.inputs[5:]))


def test_a_checkpoint_saved_at_a_batch_end_resumes_at_the_next_batch(tmp_path):
    """checkpoint.every_n_train_steps=4 (no validation before): last.ckpt is written at the end of
    batch 8, in on_train_batch_end, before Lightning counts that batch completed; resumed from it,
    the run trains on batches 9.. exactly as the uninterrupted one did and ends with its weights."""
    class KeepStep4(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            last = tmp_path / "whole" / "checkpoints" / "last.ckpt"
            if trainer.global_step == 4 and last.is_file() and not (tmp_path / "step4.ckpt").exists():
                (tmp_path / "step4.ckpt").write_bytes(last.read_bytes())

    steps = ["--trainer.max_steps=6", "--trainer.val_check_interval=25", "--checkpoint.every_n_train_steps=4"]
    cli, whole = adding_cli(tmp_path / "whole", *steps)
    cli.trainer.callbacks.insert(0, KeepStep4())
    cli.trainer.fit(cli.model, cli.datamodule)
    expected = {k: v.clone() for k, v in cli.model.state_dict().items()}
    saved = torch.load(tmp_path / "step4.ckpt", weights_only=True)  # absent if nothing was saved at step 4
    assert saved["global_step"] == 4 and saved["AddingDataModule"]["batches_drawn"] == 8
    cli, resumed = adding_cli(tmp_path / "resumed", *steps)
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(tmp_path / "step4.ckpt"))
    assert len(whole.inputs) == 12 and len(resumed.inputs) == 4
    assert all(torch.equal(a, b) for a, b in zip(resumed.inputs, whole.inputs[8:]))
    assert identical(cli.model.state_dict(), expected)


@pytest.mark.parametrize("check", ["host", "device"])
def test_the_skipped_count_goes_on_after_a_resume(check, tmp_path, monkeypatch):
    """non_finite.action=skip, a NaN loss at steps 2 and 5, stopped after step 3 and resumed:
    train/skipped_batches counts on (1, then 2), as in the uninterrupted run; with the check on
    the device too (read before each validation: sine validates every step)."""
    original = RegressionTask.batch_loss

    def nan_at_chosen_steps(self, batch):
        loss = original(self, batch)
        return loss * float("nan") if self.training and self.trainer.global_step in (1, 4) else loss

    monkeypatch.setattr(RegressionTask, "batch_loss", nan_at_chosen_steps)
    settings = ["--non_finite.action=skip", "--trainer.callbacks=[]", f"--non_finite.check={check}"]
    whole = fit("sine", tmp_path / "whole", "--trainer.max_steps=6", *settings)
    parts = fit("sine", tmp_path / "parts", "--trainer.max_steps=3", *settings)
    fit("sine", tmp_path / "parts", "--trainer.max_steps=6", *settings, f"--ckpt_path={parts / 'checkpoints' / 'last.ckpt'}")
    # Lightning logs the count again at every step after a skip until the next one, but not in the
    # steps a resumed run starts with: compare the steps both logged.
    whole_counts, resumed_counts = dict(scalars(whole, "train/skipped_batches")), dict(scalars(parts, "train/skipped_batches"))
    assert whole_counts[1] == 1.0 and whole_counts[4] == 2.0 and resumed_counts.items() <= whole_counts.items()
    assert resumed_counts[4] == 2.0
    assert_same_run(parts, whole, "train/loss", 6)


@pytest.mark.parametrize("config, extra", [("adding", ADDING),
                                           ("sine", [])])
def test_a_run_stopped_with_non_finite_weights_writes_no_checkpoint_or_figure(config, extra, tmp_path, monkeypatch, capsys):
    """A finite loss whose gradient is NaN (step 3) makes the weights NaN; the next loss is NaN and
    the run stops. Nothing is written from those weights, neither a checkpoint nor a figure: on
    adding no validation has run yet (every 25 steps), so the stop is the only moment that could
    save; sine validates (and saves last.ckpt) after every step."""
    original = RegressionTask.batch_loss

    def nan_gradient_at_step_3(self, batch):
        loss = original(self, batch)
        if self.training and torch.is_grad_enabled() and self.trainer.global_step == 2:
            loss = loss + torch.sqrt(0.0 * next(self.parameters()).sum())  # adds 0; its gradient is 0·∞ = NaN
        return loss

    monkeypatch.setattr(RegressionTask, "batch_loss", nan_gradient_at_step_3)
    with pytest.raises(SystemExit) as exit_:
        fit(config, tmp_path, "--trainer.max_steps=10", *extra)
    assert exit_.value.code == 2 and "the training loss is nan at step 4" in capsys.readouterr().err
    run = tmp_path / config / "version_0"
    assert run.is_dir() and not list(run.glob("*.png"))
    for path in run.glob("checkpoints/*.ckpt"):
        assert all(torch.isfinite(t).all() for t in torch.load(path, weights_only=True)["state_dict"].values()), path.name
    assert config != "adding" or not list(run.glob("checkpoints/*.ckpt"))


@pytest.mark.parametrize("at_most, at_least, stops_at", [
    ({"val/loss": 1e9}, {"val/within_tolerance": 0.0}, 2),  # both met at the first validation
    ({"val/loss": 0.0}, {"val/within_tolerance": 0.0}, None),  # one of the two never met: the whole budget
    ({}, {"val/not_logged": 0.0}, None),  # a metric no validation logs is not met
])
def test_stop_when_solved_needs_every_criterion(config_path, tmp_path, at_most, at_least, stops_at):
    """Hochreiter and Schmidhuber's "solved" is two criteria at once (the MSE and the share within
    0.04): the run stops at the first validation that meets all of them, and only then."""
    from lstm_pl.guards import StopWhenSolved

    cli = CLI(args=["--config", config_path("adding"), f"--trainer.logger.init_args.save_dir={tmp_path}",
                    "--data.init_args.t=20", "--data.init_args.n_sequence=200", "--trainer.max_steps=6",
                    "--trainer.val_check_interval=2"], run=False)
    solved = StopWhenSolved(at_most=at_most, at_least=at_least)
    cli.trainer.callbacks.append(solved)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert solved.solved_at == stops_at and cli.trainer.global_step == (stops_at or 6)


def test_stop_when_solved_needs_a_criterion():
    from lstm_pl.guards import StopWhenSolved

    with pytest.raises(ValueError, match="at least one criterion"):
        StopWhenSolved()


def test_a_run_resumed_from_where_it_was_solved_stays_stopped(config_path, tmp_path):
    """Resumed from the checkpoint saved when the run was solved (a kill before the run's end), the
    fit takes no further step."""
    from lstm_pl.guards import StopWhenSolved

    def run(*extra):
        cli = CLI(args=["--config", config_path("adding"), f"--trainer.logger.init_args.save_dir={tmp_path}",
                        "--trainer.logger.init_args.version=0", "--data.init_args.t=20",
                        "--data.init_args.n_sequence=200", "--trainer.max_steps=6", "--trainer.val_check_interval=2",
                        *extra], run=False)
        solved = StopWhenSolved(at_most={"val/loss": 1e9})
        cli.trainer.callbacks.insert(0, solved)  # before the checkpoint callbacks, as a config's callbacks are
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=next(tmp_path.rglob("last.ckpt"), None) if extra else None)
        return cli.trainer.global_step, solved.solved_at

    assert run() == (2, 2)
    assert run("--trainer.max_steps=10") == (2, 2)


def test_the_check_auto_reads_on_the_device_only_where_it_pays_and_can():
    """non_finite.check=auto: on the device for a GPU run whose optimizers take ``found_inf``; on the
    host on a CPU (where reading costs nothing), with an optimizer that cannot skip its own step,
    and under fp16's GradScaler (which sets ``found_inf`` itself: check=device is refused there)."""
    from types import SimpleNamespace

    from lstm_pl.errors import ConfigError
    from lstm_pl.guards import NonFiniteLoss
    from lstm_pl.optim import TFAdam

    weights = [torch.nn.Parameter(torch.zeros(2))]
    optimizers = {"TFAdam": TFAdam(weights), "fused Adam": torch.optim.Adam(weights, fused=True),
                  "SGD": torch.optim.SGD(weights, lr=0.1)}

    def chosen(device: str, optimizer: str, scaler=None, check: str = "auto") -> bool:
        guard = NonFiniteLoss(check=check)
        trainer = SimpleNamespace(optimizers=[optimizers[optimizer]], precision="16-mixed",
                                  precision_plugin=SimpleNamespace(scaler=scaler))
        guard.on_fit_start(trainer, SimpleNamespace(device=torch.device(device)))
        return guard.on_device

    assert chosen("cuda", "TFAdam") and chosen("cuda", "fused Adam")
    assert not chosen("cpu", "TFAdam") and not chosen("cuda", "SGD") and not chosen("cuda", "TFAdam", scaler=object())
    assert chosen("cpu", "TFAdam", check="device") and not chosen("cuda", "TFAdam", check="host")
    with pytest.raises(ConfigError, match="non_finite.check: device cannot run with trainer.precision 16-mixed"):
        chosen("cuda", "TFAdam", scaler=object(), check="device")


def test_a_device_stop_counts_no_skipped_steps_in_its_checkpoints(tmp_path, monkeypatch, capsys):
    """check=device with action=stop: the steps between the non-finite loss and the host's reading
    are dropped, not "skipped": a checkpoint taken among them counts none, so a run resumed from it
    does not report skipped steps it never skipped."""
    original = RegressionTask.batch_loss

    def nan_at_step_2(self, batch):
        loss = original(self, batch)
        return loss * float("nan") if self.training and self.trainer.global_step == 1 else loss

    monkeypatch.setattr(RegressionTask, "batch_loss", nan_at_step_2)
    settings = ["--trainer.callbacks=[]", "--non_finite.check=device", "--trainer.limit_val_batches=0",
                "--checkpoint.every_n_train_steps=2"]
    with pytest.raises(SystemExit) as exit_:
        fit("sine", tmp_path, "--trainer.max_steps=6", *settings)
    assert exit_.value.code == 2 and "the training loss is nan at step 2" in capsys.readouterr().err
    saved = torch.load(tmp_path / "sine" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    guard_state = next(state for key, state in saved["callbacks"].items() if "NonFiniteLoss" in key)
    assert saved["global_step"] == 6 and guard_state["skipped"] == 0
