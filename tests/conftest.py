import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The tests' models are tiny: one thread is as fast, and it keeps oneDNN's OpenMP threads from
# slowing down tenfold when another process shares the cores.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config_path():
    """Path of a shipped config by task name."""
    return lambda name: str(ROOT / "configs" / f"{name}.yaml")


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    """The shared Shakespeare text (skips the test where the checkout has no ../shared)."""
    path = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    return path
