"""Step time of the LSTM cells on the adding problem's shape: oneDNN's, and the compiled kernels'.

    python benchmarks/cells.py [--batch 10 256] [--repeats 20] [--threads 2]

One training step = forward over T=250 steps, MSE on the last output's head, backward, Adam.
Prints the best milliseconds per step and the ratio to oneDNN's nn.LSTM (the hand-written cells'
aims: 1.3x at batch 10, 1.1x at batch 256). ``lstm onednn`` and ``rnn onednn``: nn.LSTM and nn.RNN
on oneDNN (``LSTM_PL_LSTM=onednn``); ``lstm fused`` and ``rnn fused``: the same modules on the
compiled kernels of ``lstm_pl.fused`` (``LSTM_PL_LSTM=fused``; ``cell: lstm`` and ``rnn`` run on
whichever is measured faster for the shape). The hand-written cells run twice: on the compiled
kernels and on their eager path (``eager``).
"""

import argparse
import os
import time

import torch

from lstm_pl import ManyToOneSettings, ManyToOne, fused
from lstm_pl.cells import LSTMLayer

CONTENDERS = ("lstm onednn", "lstm fused", "lstm_peephole", "lstm_peephole eager", "lstm_cec", "lstm_cec eager",
              "rnn onednn", "rnn fused")
REFERENCE = "lstm onednn"


def training_step(contender: str, batch: int, steps: int, hidden: int, device: str = "cpu"):
    """A closure running one training step of a fresh hidden-``hidden`` regressor built on the
    contender's cell (on ``device``; a CUDA step waits for the device before it returns, so that it
    can be timed). ``<cell> eager`` runs a hand-written cell's eager path; ``<cell> onednn`` and
    ``<cell> fused`` a library cell on oneDNN or on the compiled kernels."""
    cell, _, path = contender.partition(" ")
    torch.manual_seed(0)
    model = ManyToOne(ManyToOneSettings(input_size=2, output_size=1, cell=cell, hidden_size=hidden, init="tf1"))
    for layer in model.modules():
        if isinstance(layer, LSTMLayer):
            layer.fused = path != "eager"
    model = model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x, y = torch.randn(batch, steps, 2, device=device), torch.randn(batch, 1, device=device)
    kernels = {"onednn": "onednn", "fused": "fused"}.get(path, "auto")

    def one_step():
        os.environ[fused.LSTM_SETTING] = kernels  # read at each forward
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
    print(f"{'batch':>5} {'cell':<20} {'ms/step':>8} {'x oneDNN nn.LSTM':>16}")
    # Off the CPU the library cells are cuDNN's whatever LSTM_PL_LSTM says (the ``onednn`` rows then
    # name cuDNN), and the hand-written cells run eagerly: the compiled kernels are CPU-only.
    contenders = CONTENDERS if args.device == "cpu" else tuple(c for c in CONTENDERS if not c.endswith(" fused"))
    for batch in args.batch:
        best = step_times(contenders, batch, args.steps, args.hidden, args.repeats, args.device)
        for cell, seconds in best.items():
            print(f"{batch:>5} {cell:<20} {seconds * 1e3:8.1f} {seconds / best[REFERENCE]:16.2f}")


if __name__ == "__main__":
    main()
