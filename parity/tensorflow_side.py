"""The Keras backend of the parity harness: each lstm_pl task rebuilt independently in Keras 3 on
TensorFlow 2 (``keras.layers.LSTM``, ``SimpleRNN``, ``Embedding``, ``Dense``; the two hand-written
cells as a Keras RNN cell in TensorFlow ops), trained from the recorded initial weights on the
batches ``checks.training_inputs`` prepared, with Keras' own Adam (its ε-hat form is TF1's; the
config's ε set explicitly), or, only when asked to follow PyTorch, with ``TorchAdam``.

It imports nothing from lstm_pl: what it knows of a run is one ``Recording`` of plain numbers
and numpy arrays: the network's description (``spec``, from the config), the weights (in Keras'
layout), the batches and the optimizer's settings.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from . import heap
from .checks import TrainingInputs
from .recording import Recording


class HandLSTMCell(keras.layers.Layer):
    """lstm_peephole and lstm_cec as a Keras RNN cell; gate blocks i, f, g, o as in Keras' LSTM
    (no f block without a forget gate), diagonal peepholes ``peephole`` (3, H) for p_i, p_f, p_o:

        [z_i, z_f, z_g, z_o] = x W + b + h U
        i = σ(z_i + p_i ⊙ c),  f = σ(z_f + p_f ⊙ c),  g = tanh(z_g)
        c' = f ⊙ c + i ⊙ g          (no forget gate, the 1997 LSTM: c' = c + i ⊙ g)
        o = σ(z_o + p_o ⊙ c'),  h' = o ⊙ tanh(c')          (without peepholes, p = 0)
    """

    def __init__(self, units: int, forget_gate: bool = True, peephole: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units, self.forget_gate, self.peephole = units, forget_gate, peephole
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        width = (4 if self.forget_gate else 3) * self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], width), initializer="zeros", name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, width), initializer="zeros", name="recurrent_kernel")
        self.bias = self.add_weight(shape=(width,), initializer="zeros", name="bias")
        self.peephole_weight = (self.add_weight(shape=(3, self.units), initializer="zeros", name="peephole")
                                if self.peephole else None)

    def call(self, inputs, states):
        h, c = states
        z = tf.matmul(inputs, self.kernel) + self.bias + tf.matmul(h, self.recurrent_kernel)
        if self.forget_gate:
            z_i, z_f, z_g, z_o = tf.split(z, 4, axis=1)
        else:
            (z_i, z_g, z_o), z_f = tf.split(z, 3, axis=1), None
        if self.peephole_weight is not None:
            z_i = z_i + self.peephole_weight[0] * c
            if z_f is not None:
                z_f = z_f + self.peephole_weight[1] * c
        i, g = tf.sigmoid(z_i), tf.tanh(z_g)
        c = tf.sigmoid(z_f) * c + i * g if z_f is not None else c + i * g
        if self.peephole_weight is not None:
            z_o = z_o + self.peephole_weight[2] * c
        h = tf.sigmoid(z_o) * tf.tanh(c)
        return h, [h, c]


def recurrent_layer(cell: str, units: int, dtype: str, name: str) -> keras.layers.Layer:
    """One Keras recurrent layer for lstm_pl's ``cell``, returning the whole sequence and its state."""
    common = dict(return_sequences=True, return_state=True, dtype=dtype, name=name)
    if cell == "lstm":
        return keras.layers.LSTM(units, activation="tanh", recurrent_activation="sigmoid", **common)
    if cell == "rnn":
        return keras.layers.SimpleRNN(units, activation="tanh", **common)
    if cell in ("lstm_peephole", "lstm_cec"):
        hand = HandLSTMCell(units, forget_gate=cell != "lstm_cec", peephole=cell == "lstm_peephole", dtype=dtype)
        return keras.layers.RNN(hand, **common)
    raise ValueError(f"model.cell: no TensorFlow counterpart for {cell!r}")


class TiedDecoder(keras.layers.Layer):
    """The decoder of a weight-tied language model: logits = h Eᵀ + b, E the embedding matrix
    (passed at call time, so that it stays the embedding's one variable)."""

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.bias = self.add_weight(shape=(vocab_size,), initializer="zeros", name="bias")

    def call(self, inputs, embeddings):
        return tf.matmul(inputs, embeddings, transpose_b=True) + self.bias


class Network(keras.Model):
    """Every task's network: [embedding] → recurrent stack (state in, state out) → dense output.

    ``regression`` (sine, adding): y = W h_T + b from the top layer's last step;
    ``classification`` (digits): the same, read as one logit per class.
    ``language_model`` (Shakespeare): logits_t = W h_t + b at every step, tokens embedded first.
    """

    def __init__(self, spec: dict, dtype: str):
        super().__init__(dtype=dtype)
        self.spec = spec
        language = spec["kind"] == "language_model"
        self.embedding = (keras.layers.Embedding(spec["vocab_size"], spec["embedding_size"], dtype=dtype, name="embedding")
                          if language else None)
        self.recurrent = [recurrent_layer(spec["cell"], spec["hidden_size"], dtype, f"recurrent_{k}")
                          for k in range(spec["num_layers"])]
        if language and spec.get("tie_weights"):
            self.dense = TiedDecoder(spec["vocab_size"], dtype=dtype, name="dense")
        else:
            self.dense = keras.layers.Dense(spec["vocab_size"] if language else spec["output_size"], dtype=dtype,
                                            name="dense")

    def state_parts(self) -> int:
        return 1 if self.spec["cell"] == "rnn" else 2

    def zero_state(self, batch: int) -> list[list[tf.Tensor]]:
        zeros = tf.zeros((batch, self.spec["hidden_size"]), dtype=self.dtype)
        return [[zeros] * self.state_parts() for _ in self.recurrent]

    def call(self, inputs, state):
        x = self.embedding(inputs) if self.embedding is not None else inputs
        new_state = []
        for layer, layer_state in zip(self.recurrent, state):
            x, *parts = layer(x, initial_state=layer_state)
            new_state.append(parts)
        if self.embedding is None:
            x = x[:, -1]
        if isinstance(self.dense, TiedDecoder):
            return self.dense(x, self.embedding.embeddings), new_state
        return self.dense(x), new_state


def assign_weights(net: Network, weights: dict) -> None:
    """Copy ``weights`` (Keras' layout: see ``pytorch_side.keras_layout``) into ``net``; every
    trainable variable must receive one, with exactly its shape."""
    pairs = []
    for layer, arrays in zip(net.recurrent, weights["recurrent"], strict=True):
        cell = layer.cell
        pairs += [(cell.kernel, arrays["kernel"]), (cell.recurrent_kernel, arrays["recurrent_kernel"]),
                  (cell.bias, arrays["bias"])]
        if arrays.get("peephole") is not None:
            pairs.append((cell.peephole_weight, arrays["peephole"]))
    if net.embedding is not None:
        pairs.append((net.embedding.embeddings, weights["embedding"]))
    if isinstance(net.dense, TiedDecoder):
        pairs.append((net.dense.bias, weights["dense"]["bias"]))
    else:
        pairs += [(net.dense.kernel, weights["dense"]["kernel"]), (net.dense.bias, weights["dense"]["bias"])]
    for variable, array in pairs:
        if tuple(variable.shape) != array.shape:
            raise ValueError(f"weight mapping: {variable.path} has shape {tuple(variable.shape)}, "
                             f"the PyTorch weight {array.shape}")
        variable.assign(array.astype(variable.dtype))
    missing = {v.path for v in net.trainable_variables} - {v.path for v, _ in pairs}
    if missing:
        raise ValueError(f"weight mapping: no PyTorch weight for {', '.join(sorted(missing))}")


class TorchAdam:
    """Adam with PyTorch's update, in TensorFlow ops, so that both frameworks take the same steps.

    PyTorch (``torch.optim.Adam``) adds ε to the bias-corrected root:
        m ← m + (1-β₁)(g - m),   v ← β₂ v + (1-β₂) g²
        θ ← θ - lr/(1-β₁ᵗ) · m / (√v / √(1-β₂ᵗ) + ε)
    Keras (like TF1's AdamOptimizer) folds the bias corrections into the step size and adds its
    epsilon to the raw root: θ ← θ - lr·√(1-β₂ᵗ)/(1-β₁ᵗ) · m / (√v + ε̂) — the same step only if
    ε̂ = ε·√(1-β₂ᵗ), an "epsilon hat" that changes every step. Rather than approximate, this class
    applies PyTorch's formula, on plain ``tf.Variable``s. The hyperparameters stay Python floats
    (doubles), as PyTorch keeps them, and the bias corrections are computed in float64, as PyTorch does.
    """

    def __init__(self, learning_rate: float, beta_1: float, beta_2: float, epsilon: float):
        self.torch_hyper = (float(learning_rate), float(beta_1), float(beta_2), float(epsilon))
        self.moments: list[tuple[tf.Variable, tf.Variable]] | None = None
        self.iterations: tf.Variable | None = None

    def build(self, variables) -> None:
        """The moment estimates m, v (zeros) for each of ``variables``, in their order."""
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.moments = [(tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False),
                         tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)) for v in variables]

    def apply(self, gradients, variables) -> None:
        """One update of ``variables`` (always the same ones, in the same order) by ``gradients``."""
        if self.moments is None:
            self.build(variables)
        lr, beta_1, beta_2, eps = self.torch_hyper
        step = tf.cast(self.iterations + 1, tf.float64)
        for gradient, variable, (m, v) in zip(gradients, variables, self.moments, strict=True):
            step_size = tf.cast(lr / (1.0 - tf.pow(tf.constant(beta_1, tf.float64), step)), variable.dtype)
            root_correction = tf.cast(tf.sqrt(1.0 - tf.pow(tf.constant(beta_2, tf.float64), step)), variable.dtype)
            gradient = tf.cast(gradient, variable.dtype)
            m.assign(m + (1.0 - beta_1) * (gradient - m))
            v.assign(v * beta_2 + (1.0 - beta_2) * gradient * gradient)
            variable.assign_sub(step_size * (m / (tf.sqrt(v) / root_correction + eps)))
        self.iterations.assign_add(1)


def clip_gradients(gradients: list[tf.Tensor], clip: dict | None) -> list[tf.Tensor]:
    """PyTorch Lightning's ``gradient_clip_val``, as ``torch.nn.utils.clip_grad_norm_`` does it:
    g ← g · min(1, c / (‖g‖ + 1e-6)), ‖g‖ the 2-norm of all gradients together (TensorFlow's
    ``clip_by_global_norm`` uses c / max(‖g‖, c), without the 1e-6); or, by value, g ← clip(g, -c, c)."""
    if clip is None:
        return gradients
    value = clip["value"]
    if clip["algorithm"] == "value":
        return [tf.clip_by_value(g, -value, value) for g in gradients]
    total = tf.norm(tf.stack([tf.norm(g) for g in gradients]))
    coefficient = tf.minimum(value / (total + 1e-6), 1.0)
    return [g * coefficient for g in gradients]


def loss_fn(kind: str):
    """The task's training loss: mean squared error, or mean cross-entropy per sequence (classes)
    or per token (words), in nats."""
    if kind == "regression":
        return lambda prediction, target: tf.reduce_mean(tf.square(prediction - target))
    return lambda logits, target: tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits))


def adam_for(optimizer: dict):
    """The config's Adam in TensorFlow, as a function applying gradients to Keras variables:
    ``tf.compat.v1.train.AdamOptimizer``, stock, for the ``tf`` form (the original's optimizer;
    Keras 3's own Adam has TF1's formula but not its float64 arithmetic: it raises float64 β to
    the power t, where TF1 multiplies float32-rounded β into float32 powers, and on the sine
    task the two part by 4.5e-4 in float64); ``TorchAdam`` for the ``torch`` form (TensorFlow
    made to follow PyTorch: the harness asks for an explicit flag first)."""
    lr, (beta_1, beta_2), eps = optimizer["lr"], optimizer["betas"], optimizer["eps"]
    if optimizer["form"] == "tf":
        adam = tf.compat.v1.train.AdamOptimizer(learning_rate=lr, beta1=beta_1, beta2=beta_2, epsilon=eps)
        return lambda gradients, variables: adam.apply_gradients(zip(gradients, [v.value for v in variables]))
    return TorchAdam(lr, beta_1, beta_2, eps).apply


def make_train_step(net: Network, optimizer: dict, clip: dict | None, jit_compile: bool = False):
    """One optimizer step of ``net`` as a ``tf.function`` (XLA-compiled with ``jit_compile``):
    (x, y, state) -> (loss before the update, the new state)."""
    apply_gradients = adam_for(optimizer)
    loss_of = loss_fn(net.spec["kind"])

    @tf.function(reduce_retracing=True, jit_compile=jit_compile)
    def train_step(x, y, state):
        with tf.GradientTape() as tape:
            output, new_state = net(x, state, training=True)
            loss = loss_of(output, y)
        # Dense gradients throughout: the embedding's arrives as IndexedSlices, but PyTorch's is a
        # dense tensor, and its Adam decays the moments of every row, not only of the rows seen.
        gradients = [tf.convert_to_tensor(g) for g in tape.gradient(loss, net.trainable_variables)]
        apply_gradients(clip_gradients(gradients, clip), net.trainable_variables)
        return loss, new_state

    return train_step


def train(recording: Recording, dtype: str, inputs: TrainingInputs, validate_every: int = 0,
          after_update: bool = False) -> dict:
    """Train a fresh Keras network from the recording's initial weights on ``inputs.batches`` (one
    optimizer step each) and evaluate it on ``inputs.val_batches``, at the end and, with
    ``validate_every``, every that many steps. The language model's state starts from zeros at
    every epoch and, with ``spec["stateful"]``, carries from window to window, cut from the graph
    between them (truncated BPTT). ``after_update``: each batch's loss again after its update (the
    original's curve; sine and adding). Returns the per-step losses, the validation loss (and its
    curve) and the seconds taken. (``benchmarks.runs`` times it with the port's cadence.)"""
    start = time.perf_counter()
    tf.get_logger().setLevel("ERROR")  # not the retracing notes: every comparison traces its own train step
    spec, batches, clip = recording.spec, inputs.batches, recording.clip

    def cast(x: np.ndarray) -> tf.Tensor:
        return tf.convert_to_tensor(x if x.dtype.kind in "iu" else x.astype(dtype))  # token ids stay integers

    net = Network(spec, dtype)
    net(cast(batches[0][0]), net.zero_state(batches[0][0].shape[0]))  # builds the variables
    assign_weights(net, recording.weights)
    loss_of = loss_fn(spec["kind"])
    stateful = spec["kind"] == "language_model" and spec.get("stateful", True)
    train_step = make_train_step(net, recording.optimizer, clip)

    @tf.function(reduce_retracing=True)
    def eval_step(x, state):
        return net(x, state, training=False)

    def validation_loss() -> float:
        """Each task's validation: the MSE over every validation sample; the mean cross-entropy over
        every validation image; the language model's token-weighted mean cross-entropy, its state
        carried across the windows in order."""
        total, count, state = 0.0, 0, None
        for x, y in inputs.val_batches:
            if state is None or not stateful:
                state = net.zero_state(x.shape[0])
            output, state = eval_step(cast(x), state)
            if spec["kind"] == "regression":
                total += float(tf.reduce_sum(tf.square(output - cast(y))))
            else:
                total += float(loss_of(output, cast(y))) * y.size
            count += y.size
            heap.release()
        return total / count

    losses, after, val_losses, state, epoch = [], [], [], None, None
    for step, ((x, y), batch_epoch) in enumerate(zip(batches, recording.epochs, strict=True), start=1):
        if not stateful or batch_epoch != epoch:
            state = net.zero_state(x.shape[0])
        epoch = batch_epoch
        loss, state = train_step(cast(x), cast(y), state)
        losses.append(float(loss))
        if after_update:
            output, _ = eval_step(cast(x), net.zero_state(x.shape[0]))
            after.append(float(loss_of(output, cast(y))))
        if validate_every and step % validate_every == 0:
            val_losses.append(validation_loss())
        heap.release()  # freed memory back once the heap has grown by heap.GROWTH (parity/heap.py)
    val_loss = validation_loss()
    keras.backend.clear_session()  # free this network's graphs before the next comparison (``all``)
    curves = {"losses_after_update": np.array(after)} if after_update else {}  # compare.py reads it where present
    return dict(losses=np.array(losses), **curves, val_loss=val_loss, val_losses=np.array(val_losses),
                seconds=time.perf_counter() - start)
