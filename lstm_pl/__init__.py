"""lstm_pl: the classic TensorFlow LSTM exercises, ported to PyTorch Lightning."""

import sys as _sys
import types as _types

# TensorBoard's writer imports all of TensorFlow when it is installed (it is, for the parity
# harness), costing seconds and a screen of log lines per start. Writing event files needs none
# of it: the module TensorBoard's own no-TensorFlow build provides selects its stub instead.
_sys.modules.setdefault("tensorboard.compat.notf", _types.ModuleType("tensorboard.compat.notf"))

from .callbacks import LossCurves, PredictionScatter, SineWaveform
from .cells import CELLS, init_tf1_, make_recurrent
from .data import AddingDataModule, SineDataModule, adding_problem, noisy_sine, train_test_split_indices
from .errors import ConfigError
from .models import SequenceRegressor, WordLanguageModel
from .tasks import LanguageModelTask, RegressionTask
from .text import TextDataModule

__all__ = [
    "CELLS", "AddingDataModule", "ConfigError", "LossCurves", "PredictionScatter", "RegressionTask",
    "SequenceRegressor", "SineDataModule", "SineWaveform", "adding_problem", "init_tf1_", "make_recurrent",
    "noisy_sine", "train_test_split_indices",
    "LanguageModelTask", "TextDataModule", "WordLanguageModel",
]
