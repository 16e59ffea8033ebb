#!/usr/bin/env bash
# The prepared GPU check (issues 11 and 23), for the device machine when one is lent: each task
# through the Trainer on CUDA in fp32 and bf16-mixed, whether cuDNN ran, the framework's cost per
# step (port minus a bare loop, sine and adding at batch 10), the original runs end to end, and the
# hand-written cells against nn.LSTM on the GPU. Needs a Python whose torch has CUDA; installs the project into it without
# touching torch. A few minutes in all.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to measure')"
"$PYTHON" -m pip install -q --no-deps -e .
"$PYTHON" -m pip install -q "pytorch-lightning>=2.5,<3" "jsonargparse[signatures]>=4.35" "torchmetrics>=1.4" \
    "tensorboard>=2.16" matplotlib "tokenizers>=0.20"
"$PYTHON" -m benchmarks.gpu --accelerator gpu
"$PYTHON" benchmarks/cells.py --device cuda --batch 10 256 --repeats 10
