"""A screenshot of TensorBoard's dashboard for docs/ (run by hand, not by CI): a sine run's
TensorBoard served on 127.0.0.1 and photographed by headless Chromium (Debian's ``chromium``
package: ``apt-get install chromium``).

    .venv/bin/python docs/screenshot.py                       # trains configs/sine.yaml into a temporary folder
    .venv/bin/python docs/screenshot.py --logdir runs         # what runs/ holds
    .venv/bin/python docs/screenshot.py --out docs/figures/tensorboard.png --size 1400,1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Chromium as root in a closed network: no sandbox (root), no GPU, and none of its calls home, which
# this machine refuses many at a time. TensorBoard draws its charts with WebGL in a worker, which a
# headless screenshot does not show: the page is opened with its forceSVG flag.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(logdir: Path) -> str:
    """TensorBoard over ``logdir`` in this process (a daemon thread); its URL once it lists a run."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(free_port()),
                          "--load_fast", "false", "--reload_interval", "1"])
    url = board.launch().rstrip("/")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/data/plugin/scalars/tags", timeout=10) as response:
            if json.loads(response.read()):
                return url
        time.sleep(0.5)
    sys.exit(f"docs/screenshot.py: error: TensorBoard lists no run under {logdir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="docs/screenshot.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", type=Path, help="a TensorBoard root (default: a fresh fit of configs/sine.yaml)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "tensorboard.png")
    parser.add_argument("--size", default="1400,1000", help="the window, width,height in pixels")
    parser.add_argument("--wait-ms", type=int, default=15000, help="how long the page may load and draw")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("docs/screenshot.py: error: no chromium on PATH; install Debian's: apt-get install chromium")
    with tempfile.TemporaryDirectory() as scratch:
        logdir = args.logdir
        if logdir is None:
            logdir = Path(scratch) / "runs"
            subprocess.run([sys.executable, "-m", "lstm_pl", "fit", "--config", str(ROOT / "configs" / "sine.yaml"),
                            f"--trainer.logger.init_args.save_dir={logdir}"], check=True, cwd=ROOT)
        elif not logdir.is_dir():
            sys.exit(f"docs/screenshot.py: error: --logdir {logdir} is not a folder")
        url = serve(logdir)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_name(f".{args.out.name}.partial.png")
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={scratch}/chromium", f"--window-size={args.size}",
                        f"--virtual-time-budget={args.wait_ms}", f"--screenshot={partial}", f"{url}/?forceSVG=true#timeseries"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        partial.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
