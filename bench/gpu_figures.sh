#!/usr/bin/env bash
# The GPU figures of docs/pipeline.md, in one run on a CUDA machine (no network needed beyond
# the package install; every model is random-init):
#
#     bash bench/gpu_figures.sh [OUT_DIR]
#
# Installs this checkout (editable, with the test extra for scikit-image's photos), prints the
# GPU model, then runs the ImageNet-shaped benchmark (20,000 JPEGs, fp32 and bf16), bench/maxes.py
# and bench/backproject.py on the GPU, and a 2-GPU torchrun precompute smoke test if there are two
# GPUs. Each figure is written to OUT_DIR/<name>.txt (default: ./gpu-figures).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-figures}}"
mkdir -p "$out"
python -m pip install -q -e ".[test]" 2>&1 | tail -2 || true
python - <<'PY' | tee "$out/device.txt"
import torch, torchvision
print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"gpu {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
PY
nproc | sed 's/^/cpu cores: /' | tee -a "$out/device.txt"
python bench/imagenet_like.py --device cuda --n 20000 --batch-size 256 --workers 12 2>&1 | tee "$out/imagenet_like_fp32.txt"
python bench/imagenet_like.py --device cuda --n 20000 --batch-size 256 --workers 12 --precision bf16 2>&1 | tee "$out/imagenet_like_bf16.txt"
python bench/maxes.py --device cuda --tracker-images 8192 --images 2048 --batch-size 256 --workers 8 2>&1 | tee "$out/maxes.txt"
python bench/backproject.py --device cuda --repeats 5 2>&1 | tee "$out/backproject.txt"
