"""What the PyTorch side hands the TensorFlow side: one record of plain numbers and numpy arrays
(no torch, no lstm_pl), so that the TensorFlow side stays an implementation of its own."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Recording:
    """One PyTorch training run, as TensorFlow needs it."""

    spec: dict                  # the network, from the parsed config: kind, cell, sizes, init, ...
    data: dict                  # the data, from the parsed config: kind (sine, adding, text) and its settings
    optimizer: dict             # form ("tf": TF1's ε-hat Adam, "torch": PyTorch's), lr, betas, eps
    clip: dict | None           # the Trainer's gradient clipping: value, algorithm ("norm" / "value")
    weights: dict               # the initial weights, in Keras' layout (pytorch_side.keras_layout)
    batches: list = field(default_factory=list)      # (x, y) per step, in order
    epochs: list = field(default_factory=list)       # the epoch of each step
    losses: list = field(default_factory=list)       # the training loss of each step (before its update)
    val_batches: list = field(default_factory=list)  # the final validation's (x, y), in order
    val_loss: float = float("nan")
    seconds: float = 0.0
    config: dict = field(default_factory=dict)       # the parsed config (overrides included), as plain values
    planned_steps: int | None = None                 # the steps the stripped Trainer was given
    # The curve the run's LossCurves(after_update) recorded, as the original did: the loss of each
    # step's batch again after its update, at these steps (1 = after the first update); empty where
    # the config draws no such curve.
    after_update_steps: list = field(default_factory=list)
    losses_after_update: list = field(default_factory=list)
