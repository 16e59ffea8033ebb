"""The TensorFlow parity harness: ``python -m parity.compare TASK`` trains an lstm_pl config in
PyTorch Lightning (``pytorch_side``) and again in TensorFlow / Keras 3 (``tensorflow_side``, which
imports nothing from lstm_pl) from the same start, and compares the loss trajectories step by step."""
