"""Step time of the hand-written cells against nn.LSTM on the adding problem's shape.

    python benchmarks/cells.py [--batch 10 256] [--repeats 20] [--threads 2]

One training step = forward over T=250 steps, MSE on the last output's head, backward, Adam.
Prints the best milliseconds per step and the ratio to nn.LSTM (the aims: 1.3x at batch 10, 1.1x
at batch 256). The hand-written cells run twice: with the compiled kernels of ``lstm_pl.fused``
(on the CPU, where they build) and on their eager path (``eager``). ``lstm fused``: the standard
LSTM's equations (forget gate, no peepholes) on the same compiled kernels, against oneDNN's.
"""

import argparse
import time

import torch

from lstm_pl import ManyToOneSettings, ManyToOne
from lstm_pl.cells import LSTMLayer, StackedLSTM

CONTENDERS = ("lstm", "lstm fused", "lstm_peephole", "lstm_peephole eager", "lstm_cec", "lstm_cec eager", "rnn")


class StandardLSTMRegressor(torch.nn.Module):
    """The ``lstm`` cell's network (one layer, a linear head on the last output) with the layer
    hand-written: forget gate, no peepholes, on the compiled kernels."""

    def __init__(self, hidden: int):
        super().__init__()
        self.rnn, self.head = StackedLSTM(2, hidden, forget_gate=True, peephole=False), torch.nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def training_step(contender: str, batch: int, steps: int, hidden: int, device: str = "cpu"):
    """A closure running one training step of a fresh hidden-``hidden`` regressor built on the
    contender's cell (on ``device``; a CUDA step waits for the device before it returns, so that it
    can be timed). A contender named ``<cell> eager`` runs the hand-written cell's eager path."""
    cell, _, path = contender.partition(" ")
    torch.manual_seed(0)
    if contender == "lstm fused":
        model = StandardLSTMRegressor(hidden)
    else:
        model = ManyToOne(ManyToOneSettings(input_size=2, output_size=1, cell=cell, hidden_size=hidden, init="tf1"))
    for layer in model.modules():
        if isinstance(layer, LSTMLayer):
            layer.fused = path != "eager"
    model = model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x, y = torch.randn(batch, steps, 2, device=device), torch.randn(batch, 1, device=device)

    def one_step():
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return one_step


def step_times(cells, batch: int, steps: int, hidden: int, repeats: int, device: str = "cpu") -> dict[str, float]:
    """Best-of-``repeats`` seconds per step for each cell, the cells interleaved round by round so
    that load from other processes hits them all alike."""
    runs = {cell: training_step(cell, batch, steps, hidden, device) for cell in cells}
    for run in runs.values():  # warm-up
        run(), run()
    best = {cell: float("inf") for cell in cells}
    for _ in range(repeats):
        for cell, run in runs.items():
            start = time.perf_counter()
            run()
            best[cell] = min(best[cell], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[10, 256])
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where there is one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.device}, {args.threads} threads, T={args.steps}, hidden={args.hidden}, "
          f"best of {args.repeats} training steps (forward, backward, Adam)")
    print(f"{'batch':>5} {'cell':<20} {'ms/step':>8} {'x nn.LSTM':>9}")
    for batch in args.batch:
        best = step_times(CONTENDERS, batch, args.steps, args.hidden, args.repeats, args.device)
        for cell, seconds in best.items():
            print(f"{batch:>5} {cell:<20} {seconds * 1e3:8.1f} {seconds / best['lstm']:9.2f}")


if __name__ == "__main__":
    main()
