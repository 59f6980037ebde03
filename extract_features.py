#!/usr/bin/env python
"""Frozen-backbone features: ``python extract_features.py --config CFG.yaml --list LIST --root DIR --out OUT``.

A script path for the launchers (scripts/extract_features.sh): torchrun and the DeepSpeed launcher take one,
and they spell "run a module" differently. Same as ``python -m side4video.tools.extract_features``.
"""
import sys

from side4video.tools.extract_features import main

if __name__ == "__main__":
    sys.exit(main())
