#!/usr/bin/env python
"""Multi-view testing: ``python test.py --config CFG.yaml --weights CKPT --test_crops 3 --test_clips 2`` (the same as
``side4video test``)."""
import sys

from side4video.tools.test import main

if __name__ == "__main__":
    sys.exit(main())
