"""The cell ablation on the adding problem: every cell on the solving budget of adding_solve.yaml.

    python benchmarks/adding_ablation.py [--cells lstm lstm_peephole lstm_cec rnn] [--config configs/adding_solve.yaml]

Each cell trains through the CLI, exactly as
    python -m lstm_pl fit --config configs/adding_solve.yaml --model.init_args.net.cell=CELL
(cells without a forget gate get --model.init_args.net.chrono_t_max=null: chrono initialisation sets
forget-gate biases), and one Markdown row is printed per cell: the final validation MSE, the
first step whose validation MSE is below 0.01 (or 'not reached'), seconds per training step
(wall time of fit over steps, validation included), and the within-0.04 share.
"""

import argparse
import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_pl.cli import CLI

NO_FORGET_GATE = {"rnn", "lstm_cec"}


def run(cell: str, config: str, save_dir: str) -> str:
    overrides = [f"--model.init_args.net.cell={cell}", f"--trainer.logger.init_args.save_dir={save_dir}",
                 f"--trainer.logger.init_args.name=ablation_{cell}"]
    if cell in NO_FORGET_GATE:
        overrides.append("--model.init_args.net.chrono_t_max=null")
    start = time.perf_counter()
    cli = CLI(args=["fit", "--config", config, *overrides])
    seconds = time.perf_counter() - start
    trainer = cli.trainer
    events = EventAccumulator(trainer.log_dir)
    events.Reload()
    val = events.Scalars("val/loss")
    reached = next((f"{s.step + 1:,}" for s in val if s.value < 0.01), "not reached")
    within = events.Scalars("val/within_tolerance")[-1].value
    command = f"python -m lstm_pl fit --config {config} " + " ".join(o for o in overrides if "logger" not in o)
    return (f"| {cell} | {val[-1].value:.5f} | {reached} | {trainer.global_step:,} | "
            f"{seconds / trainer.global_step:.3f} | {within:.1%} | `{command}` |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["lstm", "lstm_peephole", "lstm_cec", "rnn"])
    parser.add_argument("--config", default="configs/adding_solve.yaml")
    parser.add_argument("--save_dir", default="runs")
    args = parser.parse_args()
    rows = [run(cell, args.config, args.save_dir) for cell in args.cells]
    print("| cell | final val MSE | steps to MSE < 0.01 | steps run | s/step | |error| < 0.04 | command |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
