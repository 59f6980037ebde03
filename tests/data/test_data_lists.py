"""Annotation-list and label-CSV parsing, and their start-up errors."""
import logging

import pytest

from side4video.data import read_annotation_list, read_label_names
from side4video.data.lists import VideoRecord, find_duplicates, format_list_line, format_record
from side4video.errors import DataError, InputNotFoundError
from tests.support import write_list


def test_frame_folder_lines(tmp_path):
    path = write_list(tmp_path / "l.txt", ["abseiling/-7kbO0v4hag_000107_000117 300 0", "", "100218 42 2"])
    assert read_annotation_list(path) == [
        VideoRecord("abseiling/-7kbO0v4hag_000107_000117", 300, 0, is_video=False, line=1),
        VideoRecord("100218", 42, 2, is_video=False, line=3),
    ]


def test_video_lines_with_and_without_count_and_spaces(tmp_path):
    path = write_list(tmp_path / "l.txt", ["a/clip.mp4 3", "my dir/clip 2.MKV 7", "b/x.webm 120 1"])
    records = read_annotation_list(path)
    assert [(r.path, r.num_frames, r.label, r.is_video) for r in records] == [
        ("a/clip.mp4", None, 3, True), ("my dir/clip 2.MKV", None, 7, True), ("b/x.webm", 120, 1, True)]
    assert [format_record(r) for r in records] == ["a/clip.mp4 3", "my dir/clip 2.MKV 7", "b/x.webm 120 1"]


def test_frame_folder_with_space_in_path(tmp_path):
    path = write_list(tmp_path / "l.txt", ["some dir/video 12 24 3"])
    assert read_annotation_list(path)[0] == VideoRecord("some dir/video 12", 24, 3, is_video=False, line=1)


@pytest.mark.parametrize("bad_line, message", [
    ("video_dir 3", "needs an integer frame count"),      # frame folder without count
    ("video_dir 24 x", "not an integer"),                 # non-integer label
    ("video_dir 24.5 3", "needs an integer frame count"), # non-integer count
    ("lonely", "expected"),                               # one field
    ("video_dir 24 -1", "negative label"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = write_list(tmp_path / "train list.txt", ["ok 10 0", "", bad_line])
    with pytest.raises(DataError, match=message) as error:
        read_annotation_list(path)
    assert f"{path}:3" in str(error.value) and "\n" not in str(error.value)


def test_label_out_of_range_names_file_and_line(tmp_path):
    path = write_list(tmp_path / "l.txt", ["a 10 0", "b 10 5", "c 10 1"])
    with pytest.raises(DataError, match=r"l\.txt:2: label 5 is outside \[0, 5\)"):
        read_annotation_list(path, num_classes=5)
    assert len(read_annotation_list(path, num_classes=6)) == 3


def test_mixed_list_is_an_error(tmp_path):
    path = write_list(tmp_path / "l.txt", ["a 10 0", "b.mp4 1"])
    with pytest.raises(DataError, match=r"l\.txt:2: .*video file.*line 1.*frame folder"):
        read_annotation_list(path)


def test_missing_and_empty_lists(tmp_path):
    with pytest.raises(InputNotFoundError, match="nope.txt"):
        read_annotation_list(str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match=r"empty\.txt:1: .*no entries"):
        read_annotation_list(write_list(tmp_path / "empty.txt", ["", "  "]))


def test_label_names_with_and_without_header(tmp_path):
    with_header = write_list(tmp_path / "a.csv", ["id,name", "1,Pushing something from left to right",
                                                  "0,Approaching something with your camera", "2,a, b"])
    assert read_label_names(with_header) == ["Approaching something with your camera",
                                             "Pushing something from left to right", "a, b"]
    assert read_label_names(write_list(tmp_path / "b.csv", ["0,x", "1,y"])) == ["x", "y"]
    with pytest.raises(DataError, match=r"c\.csv: class ids must be 0\.\.1"):
        read_label_names(write_list(tmp_path / "c.csv", ["0,x", "2,y"]))
    with pytest.raises(DataError, match=r"d\.csv:3: class id 'z'"):
        read_label_names(write_list(tmp_path / "d.csv", ["id,name", "0,x", "z,y"]))
    with pytest.raises(DataError, match=r"e\.csv:2: duplicate class id 0"):
        read_label_names(write_list(tmp_path / "e.csv", ["0,x", "0,y"]))
    with pytest.raises(InputNotFoundError, match="missing.csv"):
        read_label_names(str(tmp_path / "missing.csv"))


def test_duplicate_entries_are_kept_with_one_warning(tmp_path, caplog):
    path = write_list(tmp_path / "dup list.txt", ["a.mp4 0", "b.mp4 1", "", "a.mp4 0", "c.mp4 2", "b.mp4 1"])
    with caplog.at_level(logging.WARNING, logger="side4video"):
        records = read_annotation_list(path)
    assert [r.path for r in records] == ["a.mp4", "b.mp4", "a.mp4", "c.mp4", "b.mp4"]
    assert find_duplicates(records) == {"a.mp4": [1, 4], "b.mp4": [2, 6]}
    messages = [r.getMessage() for r in caplog.records if r.name == "side4video"]
    assert len(messages) == 1
    assert path in messages[0] and "2 duplicate entries" in messages[0] and "'a.mp4' on lines 1, 4" in messages[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="side4video"):
        read_annotation_list(write_list(tmp_path / "unique.txt", ["a.mp4 0", "b.mp4 0"]))
    assert not caplog.records


def test_one_formatter_writes_list_lines_and_refuses_whitespace_in_new_paths():
    assert format_list_line("abseiling/a", 0, 300) == "abseiling/a 300 0"
    assert format_list_line("a/clip.mp4", 3) == "a/clip.mp4 3"
    for path in ("air drumming/a", "a\tb", "a\nb", ""):
        with pytest.raises(DataError, match="which a space-separated list cannot hold"):
            format_list_line(path, 0, 10)
    # a path read from a list (split from the right) is written back as it was, but never across lines
    assert format_list_line("my dir/clip 2.MKV", 7, allow_spaces=True) == "my dir/clip 2.MKV 7"
    with pytest.raises(DataError, match="contains whitespace"):
        format_list_line("a\nb.mp4", 1, allow_spaces=True)
