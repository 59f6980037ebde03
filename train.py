#!/usr/bin/env python
"""Train on a frozen CLIP/EVA backbone: ``python train.py --config CFG.yaml [--output DIR] [--opts key=value ...]``."""
import sys

from side4video.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
