#!/usr/bin/env python
"""Train on a frozen CLIP/EVA backbone: ``python train.py --config CFG.yaml [--output DIR] [--opts key=value ...]``
(the same as ``side4video train``)."""
import sys

from side4video.tools.train import main

if __name__ == "__main__":
    sys.exit(main())
