"""TensorBoard serves what docs/usage.md says a run holds: the loss scalars, the figures, and the
hyperparameters with the run's final metrics (HPARAMS), read back through TensorBoard's own HTTP API
from a server on 127.0.0.1 against a short run."""

import json
import socket
import struct
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Served(str):
    """A server's URL that also knows the folder it serves."""

    def __new__(cls, url: str, log_dir: Path):
        served = super().__new__(cls, url)
        served.log_dir = log_dir
        return served


@pytest.fixture
def served(tmp_path):
    """A 6-step sine run and a TensorBoard server over its save_dir; the server's URL."""
    from tensorboard import program

    main(["fit", "--config", str(ROOT / "configs" / "sine.yaml"), "--trainer.max_steps=6",
          f"--trainer.logger.init_args.save_dir={tmp_path}"])
    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(tmp_path), "--host", "127.0.0.1", "--port", str(free_port()),
                          "--load_fast", "false", "--reload_interval", "1"])
    return Served(board.launch().rstrip("/"), tmp_path)  # a daemon thread: launch() has no stop; it ends with the worker


def wait_for(fetch, ready, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while True:
        value = fetch()
        if ready(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_tensorboard_serves_the_scalars_figures_and_hparams(served):
    run = "sine/version_0"
    scalars = wait_for(lambda: get(f"{served}/data/plugin/scalars/tags"), lambda tags: run in tags)
    assert {"train/loss", "train/loss_after_update", "val/loss", "val/closed_loop_mse"} <= set(scalars[run])
    assert "epoch" not in scalars[run]  # the step is the axis; no epoch card comes first
    images = get(f"{served}/data/plugin/images/tags")
    assert {"train/loss_curves", "val/waveform"} <= set(images[run])
    # Each figure's image is the run folder's PNG, byte for byte, with its size.
    for tag, name in (("train/loss_curves", "loss_curves"), ("val/waveform", "waveform")):
        [entry] = get(f"{served}/data/plugin/images/images?run={urllib.parse.quote(run)}&tag={urllib.parse.quote(tag)}")
        with urllib.request.urlopen(f"{served}/data/plugin/images/individualImage?{entry['query']}", timeout=10) as image:
            png = image.read()
        assert png == (served.log_dir / run / f"{name}.png").read_bytes()
        assert entry["step"] == 6
        [event] = EventAccumulator(str(served.log_dir / run), size_guidance={"images": 0}).Reload().Images(tag)
        assert (event.width, event.height) == struct.unpack(">II", png[16:24])
    # The dashboard groups cards by the part of the tag before its slash, in name order: every card
    # in a split's group, so the first group a run opens on is train's, its loss curves first.
    groups = {tag.split("/")[0] for tag in [*scalars[run], *images[run]]}
    assert groups == {"train", "val"}, groups
    experiment = wait_for(lambda: get(f"{served}/data/plugin/hparams/experiment", {"experimentName": ""}),
                          lambda e: e.get("metricInfos"))
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"val/loss", "val/closed_loop_mse"} <= metrics <= set(scalars[run])  # registered, not copied
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    assert {"model/net/hidden_size", "model/net/cell", "data/batch_size", "optimizer/lr"} <= hparams, hparams
    # HPARAMS shows each metric's last value: the last validation's.
    sessions = get(f"{served}/data/plugin/hparams/session_groups",
                   {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
                    "colParams": [], "startIndex": 0, "sliceSize": 10})
    values = {m["name"]["tag"]: m for m in sessions["sessionGroups"][0]["metricValues"]}
    points = get(f"{served}/data/plugin/scalars/scalars?run={urllib.parse.quote(run)}&tag=val/loss")
    assert [step for _, step, _ in points] == list(range(6))  # one point a validation: no copy at step 0 or at the end
    assert values["val/loss"]["value"] == pytest.approx(points[-1][2]) and values["val/loss"]["trainingStep"] == 5
