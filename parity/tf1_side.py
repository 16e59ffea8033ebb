"""The TF1 backend of the parity harness: the original programs (main1.py, main2.py) rebuilt in
``tf.compat.v1`` graph mode with the original's own building blocks, following its structure
(RecurrentNNLSTM.model / RecurrentNN.model, NNLoss.L2Norm, NNOptimizer.Adam, the fit loop):

    cell = LSTMCell(num_units=H, forget_bias=1.0)   or   BasicRNNCell(num_units=H)
    state = cell.zero_state(batch, dtype); for t in range(T): output, state = cell(X[:, t, :], state)
    y = output · W + b;   loss = reduce_mean(square(t - y));   AdamOptimizer(lr, β₁, β₂).minimize(loss)

Only the initial values are taken from the PyTorch run (after ``checks`` has verified that they
are what TF's initialisers draw), mapped onto TF1's layout: the LSTMCell kernel is one matrix over
[x; h] with gate blocks i, j, f, o (j: the cell input, PyTorch's g), and its forget_bias is added
at run time, so the stored forget block is PyTorch's minus 1.0. Needs the ``tf_keras`` package
(TF1's RNN cells live there since TensorFlow 2.16), loaded with ``TF_USE_LEGACY_KERAS=1``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from . import heap
from .checks import TrainingInputs
from .recording import Recording

FORGET_BIAS = 1.0


def tf1_lstm_layout(layer: dict) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's LSTM weights (in the Keras layout of the recording: kernel (F, 4H),
    recurrent_kernel (H, 4H), bias (4H), blocks i, f, g, o) as TF1 LSTMCell's kernel (F + H, 4H)
    and bias (4H), blocks i, j, f, o, the run-time forget_bias taken out of the stored bias."""
    kernel = np.vstack([layer["kernel"], layer["recurrent_kernel"]])
    i, f, g, o = np.split(kernel, 4, axis=1)
    b_i, b_f, b_g, b_o = np.split(layer["bias"], 4)
    return np.hstack([i, g, f, o]), np.concatenate([b_i, b_g, b_f - FORGET_BIAS, b_o])


def train(recording: Recording, dtype: str, inputs: TrainingInputs, validate_every: int = 0,
          closed_loop_every: int = 0, first_window: np.ndarray | None = None, closed_loop_steps: int = 0,
          predict: np.ndarray | None = None) -> dict:
    """Run the original program's graph from the recording's initial weights on ``inputs.batches``
    (one ``sess.run([loss, train_step])`` each: the loss before the update, as PyTorch logs it;
    then, as the original's fit did, ``loss.eval`` on the same batch: the loss after the update)
    and evaluate the loss on ``inputs.val_batches``, at the end and, with ``validate_every``, every
    that many steps (the port's cadence, for ``benchmarks.runs``). Returns both per-step curves, the
    validation loss (and the curve of it) and the seconds taken.

    For ``benchmarks.runs``' "same work" column, also the original's ``predict`` (RecurrentNN.predict
    L422: one ``sess.run`` of a batch of one window per step, the window slid over the prediction)
    ``closed_loop_steps`` steps from ``first_window``, at the validations of every
    ``closed_loop_every``-th step and of the last (the port's sine figure callback's cadence), and
    the outputs for ``predict`` after training: returned as ``closed_loop`` and ``predictions``."""
    start = time.perf_counter()
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # read when tf.compat.v1.nn.rnn_cell is first touched
    import tensorflow as tf

    v1 = tf.compat.v1
    spec, optimizer, weights = recording.spec, recording.optimizer, recording.weights
    steps, features = inputs.batches[0][0].shape[1:]
    graph = tf.Graph()
    with graph.as_default():
        X_holder = v1.placeholder(dtype, shape=[None, steps, features])
        t_holder = v1.placeholder(dtype, shape=[None, 1])
        batch_size_holder = v1.placeholder(tf.int32, shape=[])
        if spec["cell"] == "lstm":
            cell = v1.nn.rnn_cell.LSTMCell(num_units=spec["hidden_size"], forget_bias=FORGET_BIAS)
        else:
            cell = v1.nn.rnn_cell.BasicRNNCell(num_units=spec["hidden_size"])
        state = cell.zero_state(batch_size_holder, dtype)
        with v1.variable_scope("RNN"):
            for t in range(steps):
                if t > 0:
                    v1.get_variable_scope().reuse_variables()
                output, state = cell(inputs=X_holder[:, t, :], state=state)
        weight = v1.Variable(weights["dense"]["kernel"].astype(dtype), name="init_weight_var")
        bias = v1.Variable(weights["dense"]["bias"].astype(dtype), name="init_bias_var")
        y_out_op = tf.matmul(output, weight) + bias
        loss_op = tf.reduce_mean(tf.square(t_holder - y_out_op))
        adam = v1.train.AdamOptimizer(learning_rate=optimizer["lr"], beta1=optimizer["betas"][0],
                                      beta2=optimizer["betas"][1], epsilon=optimizer["eps"])
        train_step = adam.minimize(loss_op)
        kernel_var, bias_var = cell.weights
        layer = weights["recurrent"][0]
        kernel, cell_bias = (tf1_lstm_layout(layer) if spec["cell"] == "lstm" else
                             (np.vstack([layer["kernel"], layer["recurrent_kernel"]]), layer["bias"]))
        load = [v1.assign(kernel_var, kernel.astype(dtype)), v1.assign(bias_var, cell_bias.astype(dtype))]
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            session.run(load)

            def validation_loss() -> float:
                squared, count = 0.0, 0
                for x, y in inputs.val_batches:
                    loss = session.run(loss_op, {X_holder: x, t_holder: y, batch_size_holder: len(x)})
                    squared, count = squared + float(loss) * y.size, count + y.size
                return squared / count

            def closed_loop() -> np.ndarray:
                window, predicted = first_window.astype(dtype)[None], []
                for _ in range(closed_loop_steps):
                    y = session.run(y_out_op, {X_holder: window[-1:], batch_size_holder: 1})
                    predicted.append(float(y[0, 0]))
                    window = np.concatenate([window[:, 1:], y[:, None, :]], axis=1)
                return np.array(predicted)

            losses, after_update, val_losses, closed = [], [], [], None
            for step, (x, y) in enumerate(inputs.batches, start=1):
                feed = {X_holder: x, t_holder: y, batch_size_holder: len(x)}
                loss, _ = session.run([loss_op, train_step], feed_dict=feed)
                losses.append(float(loss))
                after_update.append(float(session.run(loss_op, feed_dict=feed)))  # RecurrentNN.fit L404
                if validate_every and step % validate_every == 0:
                    val_losses.append(validation_loss())
                    if closed_loop_every and (step % closed_loop_every == 0 or step == len(inputs.batches)):
                        closed = closed_loop()
                heap.release()  # freed memory back once the heap has grown by heap.GROWTH (parity/heap.py)
            val_loss = validation_loss()
            predictions = (None if predict is None else
                           session.run(y_out_op, {X_holder: predict.astype(dtype), batch_size_holder: len(predict)}))
    return dict(losses=np.array(losses), losses_after_update=np.array(after_update), val_loss=val_loss,
                val_losses=np.array(val_losses), closed_loop=closed, predictions=predictions,
                seconds=time.perf_counter() - start)
