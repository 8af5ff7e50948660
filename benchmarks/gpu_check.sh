#!/usr/bin/env bash
# GPU check, about 5 minutes on one H100: the step benchmarks of ViT-B/16 at 224 px, batch 256, in bf16
# with fused attention (images/s, MFU, compiled against eager), then a 1-process torchrun DDP pre-training
# run of 4 steps, compiled (NCCL).
# Needs the suite's Python environment (torch with CUDA, timm); run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

timeout 420 "$py" -m benchmarks.bench_gpu

data=$(mktemp -d)
out=$(mktemp -d)
"$py" - "$data" <<'PY'
import sys
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for i in range(512):
    Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(f"{sys.argv[1]}/{i:04d}.png")
PY
timeout 240 "$py" -m torch.distributed.run --nproc_per_node 1 -m emae pretrain --preset imagenet-vit-b \
    --dataset images --data "$data" --batch-size 128 --effective-batch 0 --epochs 1 --warmup-epochs 0 \
    --num-workers 4 --log-every 1 --compile --device cuda --output-dir "$out"
"$py" - "$out" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(f"{sys.argv[1]}/log.txt")]
print(f"DDP (1 process, nccl): {len(lines)} steps, last loss {lines[-1]['loss']:.4f}, "
      f"{lines[-1]['images_per_s']:.0f} img/s")
PY
