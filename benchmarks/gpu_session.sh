#!/bin/sh
# One prepared check for a lent GPU machine: what only a GPU shows, in about 9 minutes, results under $OUT.
#
#   OUT=gpu_results sh benchmarks/gpu_session.sh
#
# Needs the project's dependencies importable there (torch with CUDA, open_clip, timm, av, decord, webdataset).
# 1. the data path: device-side augmentation of batch-32 clips on the GPU against the frozen ViT-B/16 bf16 forward
#    on the same batch, and the host cost per clip (16 cores: 4 loader workers);
# 2. training memory and speed, ViT-B/16, 8 frames, batch 32, bf16 (side network against the baselines);
# 3. the device-augmentation tests that need CUDA (GPU pixels against the CPU's).
set -u
OUT=${OUT:-gpu_results}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
timeout 240 "$PY" benchmarks/bench_loader.py --sources jpeg,shards,pyav_1080p --workers 4 --clips 16 \
    --backbone ViT-B-16 --json "$OUT/loader.json" > "$OUT/loader.txt" 2>&1
echo "bench_loader: exit $?" >> "$OUT/status.txt"
timeout 200 "$PY" benchmarks/train_memory_speed.py --arch ViT-B-16 --frames 8 --batch 32 --precision bf16 \
    --device cuda --no-scaling --no-multiview --json "$OUT/train_b16.json" > "$OUT/train_b16.txt" 2>&1
echo "train_memory_speed: exit $?" >> "$OUT/status.txt"
timeout 90 "$PY" -m pytest -q -rs tests/data/test_device_augment.py -k cuda > "$OUT/pytest_cuda.txt" 2>&1
echo "pytest cuda: exit $?" >> "$OUT/status.txt"
