"""What the Something-Something v1 and v2 preparers share: class names as the label CSVs write them, and the
check of a class order against the shipped ``sth_labels.csv``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from .listio import name_key, read_label_csv

# The shipped label CSVs live in the source checkout (``datasets/labels/``), outside the package; where they are
# absent (an installed wheel) the order check is skipped, the lists are written all the same.
LABELS_DIR = Path(__file__).resolve().parents[2] / "datasets" / "labels"
STH_LABELS = LABELS_DIR / "sth_labels.csv"


def sth_csv_name(name: str) -> str:
    """Class name as written in label CSVs: Side4Video's ``sth_labels.csv`` drops the commas of the
    official names ("Removing something, revealing ..." -> "Removing something revealing ...")."""
    return " ".join(name.replace(",", " ").split())


def compare_with_sth_labels(names: Sequence[str], what: str) -> bool:
    """Tell whether ``names`` (in id order) equal the shipped ``sth_labels.csv`` (SSv2 order)."""
    if not STH_LABELS.is_file():
        return False
    reference = read_label_csv(STH_LABELS)
    ours = [sth_csv_name(n) for n in names]
    if [name_key(n) for n in ours] == [name_key(n) for n in reference]:
        print(f"{what}: class order matches {STH_LABELS.name} (SSv2 order)")
        return True
    first = next((i for i, (a, b) in enumerate(zip(ours, reference)) if name_key(a) != name_key(b)),
                 min(len(ours), len(reference)))
    print(f"warning: {what}: class order differs from {STH_LABELS.name} from id {first} "
          f"({ours[first] if first < len(ours) else '<end>'!r} vs "
          f"{reference[first] if first < len(reference) else '<end>'!r}); "
          "lists from this run use the order written to labels.csv", file=sys.stderr)
    return False
