"""The label CSVs shipped in datasets/labels/: class counts, orders, and the SSv2 flip pairs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from side4video.prep.listio import read_label_csv
from side4video.prep.something import compare_with_sth_labels
from side4video.prep.sthv1 import read_sthv1_labels

LABELS = Path(__file__).resolve().parents[2] / "datasets" / "labels"

# data.flip_pairs for Something-Something: classes swapped when a clip is mirrored horizontally
STH_FLIP_PAIRS = [[86, 87], [93, 94], [166, 167]]


@pytest.mark.parametrize("name,count", [("kinetics_400_labels.csv", 400), ("sth_labels.csv", 174),
                                        ("ucf101_labels.csv", 101), ("hmdb51_labels.csv", 51)])
def test_label_csv_counts(name, count):
    names = read_label_csv(LABELS / name)      # also checks the header and ids 0..n-1 in order
    assert len(names) == count
    assert len(set(names)) == count
    assert all("," not in n for n in names)    # plain 'id,name' lines, no CSV quoting needed


def test_label_orders():
    k400 = read_label_csv(LABELS / "kinetics_400_labels.csv")
    assert k400 == sorted(k400) and k400[0] == "abseiling" and k400[-1] == "zumba"
    hmdb = read_label_csv(LABELS / "hmdb51_labels.csv")
    assert hmdb == sorted(hmdb) and hmdb[0] == "brush_hair" and hmdb[-1] == "wave"
    ucf = read_label_csv(LABELS / "ucf101_labels.csv")   # classInd.txt order (case-insensitive alphabetical)
    assert ucf == sorted(ucf, key=str.lower) and ucf[0] == "ApplyEyeMakeup" and ucf[-1] == "YoYo"
    assert ucf[36] == "HandstandPushups"                 # classInd spelling = folder name
    sth = read_label_csv(LABELS / "sth_labels.csv")
    assert sth[0] == "Approaching something with your camera" and sth[-1] == "Wiping something off of something"
    # ids follow the sorted official names, which still contain a comma here (hence not sorted without it)
    assert sth[120] == "Putting something something and something on the table"


def _mirror(name: str) -> str:
    swap = {"left": "right", "right": "left"}
    return re.sub(r"\b(left|right)\b", lambda m: swap[m.group(1)], name)


def test_sth_flip_pairs_are_the_left_right_classes():
    names = read_label_csv(LABELS / "sth_labels.csv")
    for a, b in STH_FLIP_PAIRS:
        assert "left" in names[a] and "right" in names[b]
        assert _mirror(names[a]) == names[b]
    assert names[86] == "Pulling something from left to right"
    assert names[87] == "Pulling something from right to left"
    assert names[93] == "Pushing something from left to right"
    assert names[94] == "Pushing something from right to left"
    assert names[166] == "Turning the camera left while filming something"
    assert names[167] == "Turning the camera right while filming something"

    # and they are all of them: no other class changes meaning under a horizontal flip
    index = {n: i for i, n in enumerate(names)}
    found = sorted({tuple(sorted((i, index[_mirror(n)]))) for i, n in enumerate(names)
                    if _mirror(n) != n and _mirror(n) in index})
    assert [list(p) for p in found] == STH_FLIP_PAIRS


# The official Something-Something names that contain commas (Side4Video's CSV drops the commas).
STH_COMMA_NAMES = {
    21: "Laying something on the table on its side, not upright",
    24: "Letting something roll up a slanted surface, so it rolls back down",
    28: "Lifting something up completely, then letting it drop down",
    31: "Lifting up one end of something, then letting it drop down",
    70: "Pretending to pour something out of something, but something is empty",
    115: "Putting something that can't roll onto a slanted surface, so it slides down",
    116: "Putting something that can't roll onto a slanted surface, so it stays where it is",
    117: "Putting something that cannot actually stand upright upright on the table, so it falls on its side",
    120: "Putting something, something and something on the table",
    121: "Removing something, revealing something behind",
    159: "Tipping something with something in it over, so something in it falls out",
    163: "Trying to pour something into something, but missing so it spills next to it",
}


def test_sth_order_is_the_sorted_official_names(tmp_path, capsys):
    """SSv1 ids = sorted official names (TSM convention); these must give the shipped (SSv2) order."""
    names = read_label_csv(LABELS / "sth_labels.csv")
    official = list(names)
    for i, n in STH_COMMA_NAMES.items():
        assert n.replace(",", "") == names[i]
        official[i] = n
    assert official == sorted(official)          # labels.json ids are the sorted official names

    v1_file = tmp_path / "something-something-v1-labels.csv"
    v1_file.write_text("\n".join(reversed(official)) + "\n")   # any file order
    v1 = read_sthv1_labels(v1_file)
    assert compare_with_sth_labels(v1, "test") is True
    assert "matches sth_labels.csv" in capsys.readouterr().out
    # sorting the comma-less names instead would move class 120
    assert sorted(names) != names
