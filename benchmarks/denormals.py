"""What flushing denormals to zero buys: a plain RNN on the adding problem, with and without.

    OMP_NUM_THREADS=1 python -m benchmarks.denormals [--steps 300]

Trains ``configs/adding_solve_rnn.yaml`` for ``--steps`` steps (validation off) twice in this
process, once as every CLI run does (``torch.set_flush_denormal(True)``, set by ``lstm_pl.cli.CLI``)
and once with that call made a no-op, and prints seconds per step and the last training loss.
"""

import argparse
import tempfile
import time

import torch

from lstm_pl.cli import CLI, quiet_start


def seconds_per_step(flush: bool, steps: int) -> tuple[float, float]:
    set_flush = torch.set_flush_denormal
    if not flush:
        torch.set_flush_denormal = lambda on: set_flush(False)
    try:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            cli = CLI(args=["fit", "--config", "configs/adding_solve_rnn.yaml", f"--trainer.max_steps={steps}",
                            f"--trainer.logger.init_args.save_dir={folder}", "--trainer.limit_val_batches=0",
                            "--trainer.enable_model_summary=false", "--trainer.callbacks=[]"])
        return (time.perf_counter() - start) / steps, float(cli.trainer.callback_metrics["train/loss"])
    finally:
        torch.set_flush_denormal = set_flush


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    quiet_start()
    torch.set_num_threads(1)
    results = {flush: seconds_per_step(flush, args.steps) for flush in (False, True)}
    for flush, (seconds, loss) in results.items():
        print(f"flush denormals {flush!s:5}: {seconds:.3f} s/step, last train loss {loss:.4f}")
    print(f"speed-up: {results[False][0] / results[True][0]:.1f}x")


if __name__ == "__main__":
    main()
