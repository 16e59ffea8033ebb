"""lstm_pl: the classic TensorFlow LSTM exercises, ported to PyTorch Lightning."""

from .averaging import WeightAveraging
from .cache import NeuralCache
from .callbacks import ClassificationFigures, LossCurves, PredictionScatter, SaveTokenizer, SineWaveform
from .cells import CELLS, init_tf1_, make_recurrent, single_bias_
from .data import AddingDataModule, SineDataModule, adding_problem, noisy_sine, train_test_split_indices
from .errors import ConfigError
from .images import DigitsDataModule, MNISTDataModule
from .models import (LanguageModelSettings, ManyToOneSettings, ManyToOne, WordLanguageModel, closed_loop)
from .tasks import ClassificationTask, LanguageModelTask, RegressionTask
from .text import TextDataModule

__all__ = [
    "CELLS", "AddingDataModule", "ClassificationFigures", "ClassificationTask", "ConfigError", "DigitsDataModule",
    "MNISTDataModule", "LanguageModelSettings", "LanguageModelTask", "LossCurves", "NeuralCache",
    "PredictionScatter", "RegressionTask", "ManyToOneSettings", "SaveTokenizer", "ManyToOne",
    "SineDataModule", "SineWaveform", "TextDataModule", "WeightAveraging", "WordLanguageModel", "adding_problem", "closed_loop",
    "init_tf1_", "make_recurrent", "noisy_sine", "single_bias_", "train_test_split_indices",
]
