"""The compiled kernels' matrix products against torch's (MKL on the CPU) at the LSTM's shapes.

    OMP_NUM_THREADS=1 python -m benchmarks.products [--repeats 20]

The adding problem's layer (T=250, hidden 100, input 2): the recurrence's per-step product
h Uᵀ at batch 10 and 256, the backward's δa U, and the weight gradients over all T·B rows,
dU = δaᵀ h and dW = δaᵀ x. Prints the best microseconds of each (after a warm-up) and torch/kernels
(above 1: the kernels are faster).
"""

import argparse
import time

import torch

from lstm_pl import fused


def best_microseconds(run, repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    kernels = fused.kernels()
    if kernels is None:
        raise SystemExit("benchmarks.products: the compiled kernels are not built (python -m lstm_pl.fused)")
    torch.manual_seed(0)
    hidden, gates, rows = 100, 400, 250 * 10
    u = torch.randn(gates, hidden)
    u_t = u.t().contiguous()
    cases = []
    for batch in (10, 256):
        h = torch.randn(batch, hidden)
        cases.append((f"h Uᵀ, batch {batch}", lambda h=h: h @ u_t, lambda h=h: kernels.matmul(h, u_t)))
    grad = torch.randn(10, gates)
    cases.append(("δa U, batch 10", lambda: grad @ u, lambda: kernels.matmul(grad, u)))
    grad_all, h_all, x_all = torch.randn(rows, gates), torch.randn(rows, hidden), torch.randn(rows, 2)
    cases.append(("dU = δaᵀ h, 2,500 rows", lambda: grad_all.t() @ h_all, lambda: kernels.matmul_tn(grad_all, h_all)))
    cases.append(("dW = δaᵀ x, 2,500 rows", lambda: grad_all.t() @ x_all, lambda: kernels.matmul_tn(grad_all, x_all)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print("| product | torch (µs) | kernels (µs) | torch/kernels |\n| --- | ---: | ---: | ---: |")
    for name, reference, ours in cases:
        torch.testing.assert_close(ours(), reference(), rtol=1e-4, atol=1e-3)
        times = [best_microseconds(run, args.repeats) for run in (reference, ours)]
        print(f"| {name} | {times[0]:.1f} | {times[1]:.1f} | {times[0] / times[1]:.2f} |")


if __name__ == "__main__":
    main()
