#!/usr/bin/env python
"""Multi-view testing: ``python test.py --config CFG.yaml --weights CKPT --test_crops 3 --test_clips 2``."""
import sys

from side4video.cli import test_main

if __name__ == "__main__":
    sys.exit(test_main())
