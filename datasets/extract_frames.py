#!/usr/bin/env python
"""Decode videos into folders of JPEG frames (one folder per video), resumably and in parallel.

    python datasets/extract_frames.py SRC_DIR_OR_LIST DST_DIR [options]

The same command as ``python -m side4video.prep.cli frames ...``; the code is in ``side4video/prep/frames.py``.
"""
from __future__ import annotations

import sys

from side4video.prep.cli import extract_frames_main

if __name__ == "__main__":
    sys.exit(extract_frames_main())
