"""Annotation-list defects found in review, each pinned by a test that failed before its fix:

* a list or label CSV saved with a UTF-8 byte-order mark (Windows editors, Excel) lost its first entry, since the
  mark became part of the first path (or class id); CRLF line endings must work together with it;
* a video listed twice with different labels was reported as a plain duplicate, without its labels.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from side4video.data.lists import VideoRecord, read_annotation_list, read_label_names, warn_duplicates
from tests.support import write_list

BYTE_ORDER_MARK = "\ufeff"
LINE_ENDINGS = pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])


def write_with_bom(path: Path, lines: list[str], newline: str) -> str:
    path.write_bytes((BYTE_ORDER_MARK + "".join(line + newline for line in lines)).encode("utf-8"))
    return str(path)


@LINE_ENDINGS
def test_frames_list_with_byte_order_mark_keeps_its_first_folder(tmp_path, newline):
    path = write_with_bom(tmp_path / "train_frames.txt", ["abseiling/a 300 0", "", "air_drumming/b 20 1"], newline)
    assert read_annotation_list(path) == [VideoRecord("abseiling/a", 300, 0, is_video=False, line=1),
                                          VideoRecord("air_drumming/b", 20, 1, is_video=False, line=3)]


@LINE_ENDINGS
def test_video_list_with_byte_order_mark_keeps_its_first_video(tmp_path, newline):
    path = write_with_bom(tmp_path / "train_videos.txt", ["a/clip.mp4 3", "my dir/clip 2.MKV 7", "b/x.webm 120 1"],
                          newline)
    assert [(r.path, r.num_frames, r.label, r.is_video) for r in read_annotation_list(path)] == [
        ("a/clip.mp4", None, 3, True), ("my dir/clip 2.MKV", None, 7, True), ("b/x.webm", 120, 1, True)]


@LINE_ENDINGS
def test_label_csv_with_byte_order_mark_keeps_its_first_class(tmp_path, newline):
    # without a header the mark sat in front of id 0, so that row was taken for a header and class 0 was lost
    path = write_with_bom(tmp_path / "labels.csv", ["0,abseiling", '1,"Removing something, revealing"', "2,zumba"],
                          newline)
    assert read_label_names(path) == ["abseiling", "Removing something, revealing", "zumba"]


def _side4video_messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "side4video"]


def test_video_listed_with_two_labels_is_a_warning_of_its_own_naming_both(tmp_path, caplog):
    path = write_list(tmp_path / "train list.txt", ["a.mp4 0", "b.mp4 1", "a.mp4 3", "c.mp4 2", "c.mp4 2"])
    with caplog.at_level(logging.WARNING, logger="side4video"):
        records = read_annotation_list(path)
    # every copy is still kept, with the label of its own line
    assert [(r.path, r.label) for r in records] == [("a.mp4", 0), ("b.mp4", 1), ("a.mp4", 3), ("c.mp4", 2),
                                                    ("c.mp4", 2)]
    messages = _side4video_messages(caplog)
    assert len(messages) == 2
    conflict = next(m for m in messages if "different labels" in m)
    assert path in conflict and "'a.mp4'" in conflict
    assert "label 0 on line 1" in conflict and "label 3 on line 3" in conflict
    duplicate = next(m for m in messages if "different labels" not in m)
    assert "1 duplicate entry" in duplicate and "'c.mp4' on lines 4, 5" in duplicate and "a.mp4" not in duplicate

    summary = warn_duplicates(records, path)
    assert (summary.duplicated_videos, summary.extra_copies, summary.conflicting_videos) == (1, 1, 1)


def test_only_conflicting_labels_give_only_the_conflict_warning(tmp_path, caplog):
    path = write_list(tmp_path / "val.txt", ["x 10 0", "y 10 1", "x 10 2", "x 10 2"])
    with caplog.at_level(logging.WARNING, logger="side4video"):
        records = read_annotation_list(path)
    messages = _side4video_messages(caplog)
    assert len(messages) == 1
    assert "1 video listed with different labels" in messages[0]
    assert "label 0 on line 1; label 2 on lines 3, 4" in messages[0]
    assert warn_duplicates(records, path).conflicting_videos == 1
