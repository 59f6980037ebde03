#!/usr/bin/env python
"""Build TSN-style train/val annotation lists and the label CSV from official dataset annotations.

    python datasets/build_lists.py {hmdb51,kinetics,sthv1,sthv2,ucf101} --out_dir OUT [options]

The same command as ``python -m side4video.prep.cli DATASET ...``; the code is in ``side4video/prep/`` (one
module per dataset). Malformed annotation input stops the run with ``error: <file>:<line>: ...`` and status 2.
"""
from __future__ import annotations

import sys

from side4video.prep.cli import build_lists_main

if __name__ == "__main__":
    sys.exit(build_lists_main())
