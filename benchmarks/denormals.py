"""What flushing denormals to zero buys: a plain RNN on the adding problem, with and without.

    OMP_NUM_THREADS=1 python -m benchmarks.denormals [--steps 300]

Trains ``configs/adding_solve_rnn.yaml`` for ``--steps`` steps (validation off) twice in this
process, once as every entry point sets it up (``lstm_pl.runtime.flush_denormals``) and once without,
and prints seconds per step and the last training loss.
"""

import argparse
import tempfile
import time

import torch

from lstm_pl import runtime
from lstm_pl.cli import CLI


def seconds_per_step(flush: bool, steps: int) -> tuple[float, float]:
    torch.set_flush_denormal(flush)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        cli = CLI(args=["fit", "--config", "configs/adding_solve_rnn.yaml", f"--trainer.max_steps={steps}",
                        f"--trainer.logger.init_args.save_dir={folder}", "--trainer.limit_val_batches=0",
                        "--trainer.enable_model_summary=false", "--trainer.callbacks=[]"])
    return (time.perf_counter() - start) / steps, float(cli.trainer.callback_metrics["train/loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    runtime.start()
    torch.set_num_threads(1)
    results = {flush: seconds_per_step(flush, args.steps) for flush in (False, True)}
    for flush, (seconds, loss) in results.items():
        print(f"flush denormals {flush!s:5}: {seconds:.3f} s/step, last train loss {loss:.4f}")
    print(f"speed-up: {results[False][0] / results[True][0]:.1f}x")


if __name__ == "__main__":
    main()
