"""What keeping freed memory buys: a language-model training step with glibc's default allocator
thresholds and with ``lstm_pl.runtime.keep_freed_memory`` (which every entry point calls).

    OMP_NUM_THREADS=1 python -m benchmarks.allocator [--steps 15]

The Shakespeare config's network (vocabulary 2,610, embedding and hidden 128, batch 100 x 50
words), Adam; each variant in its own process, alternated ``--rounds`` times. Prints wall time per
step, user and system CPU seconds, and minor page faults, per variant.
"""

import argparse
import subprocess
import sys

STEP = """
import resource, sys, time, torch
from lstm_pl import LanguageModelSettings, WordLanguageModel
from lstm_pl.runtime import keep_freed_memory
torch.set_num_threads(1)
if sys.argv[1] == "kept":
    keep_freed_memory()
net = WordLanguageModel(LanguageModelSettings(vocab_size=2610, init="torch"))
optimizer = torch.optim.Adam(net.parameters(), 1e-3)
x, y = torch.randint(0, 2610, (100, 50)), torch.randint(0, 2610, (100, 50))
def step():
    optimizer.zero_grad()
    logits, _ = net(x)
    torch.nn.functional.cross_entropy(logits.reshape(-1, 2610), y.reshape(-1)).backward()
    optimizer.step()
step(), step()
steps = int(sys.argv[2])
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
after = resource.getrusage(resource.RUSAGE_SELF)
print((time.perf_counter() - start) / steps, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
      after.ru_minflt - before.ru_minflt)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results = {"glibc default": [], "kept": []}
    for _ in range(args.rounds):
        for variant in results:
            out = subprocess.run([sys.executable, "-c", STEP, variant, str(args.steps)], capture_output=True, text=True,
                                 check=True)
            results[variant].append([float(v) for v in out.stdout.split()])
    for variant, rows in results.items():
        best = min(rows)
        print(f"{variant:13}: {best[0] * 1e3:6.1f} ms/step, {best[1]:.2f} s user, {best[2]:.2f} s system, "
              f"{best[3]:,.0f} minor page faults over {args.steps} steps (best of {args.rounds})")


if __name__ == "__main__":
    main()
