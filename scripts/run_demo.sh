#!/bin/sh
# The main job on the embedded default, on CPU: build the toy temporal dataset, train a Side4Video side
# network and a frame-averaging probe on a tiny frozen backbone with DeepSpeed, test both with
# 3 crops x 2 clips and print the comparison. Creates .venv and installs the project on first use.
. "$(dirname "$0")/_env.sh"
exec python -m side4video.tools.demo "$@"
