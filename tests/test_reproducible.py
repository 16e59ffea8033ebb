"""Behaviour pinned bit for bit: the same config and seed give the same per-step losses, final
validation loss and final weights on CPU as when the values in ``pinned/trajectories.json`` were
recorded (regenerate them only for an intended change of behaviour:
``python tests/test_reproducible.py``)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
PINNED = Path(__file__).with_name("pinned") / "trajectories.json"

# Each case: a shipped config, shortened to a few seconds by overrides that exist before and after
# refactors (a step budget, smaller sizes), so that the pinned values keep meaning the same run.
CASES = {
    "sine": ("sine", ["--trainer.max_steps=40"]),
    "adding": ("adding", ["--trainer.max_steps=30"]),
    "adding_solve": ("adding_solve", ["--trainer.max_steps=20", "--data.init_args.t=50", "--data.init_args.n_sequence=400"]),
    "shakespeare": ("shakespeare", ["--trainer.max_steps=12", "--trainer.limit_train_batches=6", "--trainer.limit_val_batches=2",
                                    "--model.init_args.net.embedding_size=16", "--model.init_args.net.hidden_size=16",
                                    "--data.init_args.seq_len=10"]),
}


class StepLosses(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def run(case: str, tmp_path: Path, *extra: str) -> dict:
    """Train ``case`` through the CLI (no logger, no callbacks) and return its
    per-step losses, final validation loss and a digest of the final weights."""
    from lstm_pl.cli import CLI

    config, overrides = CASES[case]
    torch.set_num_threads(1)
    cli = CLI(args=["--config", str(ROOT / "configs" / f"{config}.yaml"), *overrides, *extra, "--trainer.logger=false",
                    f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_model_summary=false"], run=False)
    steps = StepLosses()
    cli.trainer.callbacks = [steps]  # figures, checkpoints and early stopping do not change the steps
    cli.trainer.fit(cli.model, cli.datamodule)
    val = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]["val/loss"]
    digest = hashlib.sha256()
    for name, tensor in sorted(cli.model.state_dict().items()):
        if "metric" not in name:
            digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return dict(losses=[x.hex() for x in steps.losses], val_loss=float(val).hex(), weights=digest.hexdigest())


@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_is_pinned(case, tmp_path, request):
    extra = [f"--data.init_args.path={request.getfixturevalue('shakespeare')}"] if case == "shakespeare" else []
    expected = json.loads(PINNED.read_text())[case]
    got = run(case, tmp_path, *extra)
    assert [float.fromhex(x) for x in got["losses"]] == [float.fromhex(x) for x in expected["losses"]]
    assert float.fromhex(got["val_loss"]) == float.fromhex(expected["val_loss"])
    assert got["weights"] == expected["weights"]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        pinned = {case: run(case, Path(folder) / case) for case in sorted(CASES)}
    PINNED.write_text(json.dumps(pinned, indent=1) + "\n")
    print(f"wrote {PINNED}", file=sys.stderr)
