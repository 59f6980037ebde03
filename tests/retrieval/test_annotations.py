"""The retrieval datasets' caption files, written small in each format and read as the reference's loaders do."""
from __future__ import annotations

import json
import os
import pickle

import pytest

from side4video.errors import DataError, InputNotFoundError
from side4video.retrieval.annotations import (
    load_plain_pickle,
    read_activitynet,
    read_caption_lines,
    read_didemo,
    read_msrvtt,
    read_msvd,
    read_vatex,
    video_location,
)


def pairs(captions):
    return [(captions.videos[v], text) for v, text in zip(captions.caption_video, captions.captions)]


def test_msrvtt_training_expands_every_caption_and_the_1k_a_test_has_one_per_video(tmp_path):
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\nvideo7\nvideo2\n")
    sentences = [{"video_id": "video2", "caption": "a man sings", "sen_id": 0},
                 {"video_id": "video9", "caption": "not in the split", "sen_id": 1},
                 {"video_id": "video7", "caption": "a cat jumps", "sen_id": 2},
                 {"video_id": "video2", "caption": "someone is singing", "sen_id": 3}]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    train = read_msrvtt(tmp_path / "MSRVTT_train.9k.csv", tmp_path / "MSRVTT_data.json")
    assert train.videos == ["video7", "video2"]   # the csv's order
    assert pairs(train) == [("video7", "a cat jumps"), ("video2", "a man sings"), ("video2", "someone is singing")]
    assert train.multi_caption and train.captions_per_video() == [1, 2]

    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr7980,video7980,a woman cooks\n"
        "ret1,msr7981,video7981,\"cars, racing\"\n")
    test = read_msrvtt(tmp_path / "MSRVTT_JSFUSION_test.csv")
    assert pairs(test) == [("video7980", "a woman cooks"), ("video7981", "cars, racing")]
    assert not test.multi_caption

    (tmp_path / "bad.csv").write_text("vid\nvideo7\n")
    with pytest.raises(DataError, match="bad.csv: no column 'video_id'"):
        read_msrvtt(tmp_path / "bad.csv", tmp_path / "MSRVTT_data.json")
    (tmp_path / "lonely.csv").write_text("video_id\nvideo5\n")
    with pytest.raises(DataError, match="1 listed videos have no caption"):
        read_msrvtt(tmp_path / "lonely.csv", tmp_path / "MSRVTT_data.json")


def test_msvd_joins_tokens_and_keeps_the_split_order(tmp_path):
    (tmp_path / "test_list.txt").write_text("vidB\nvidA\n\n")
    captions = {"vidA": [["a", "dog", "runs"]], "vidB": [["two", "men"], ["men", "talk"]], "vidC": [["x"]]}
    with open(tmp_path / "raw-captions.pkl", "wb") as handle:
        pickle.dump(captions, handle)
    msvd = read_msvd(tmp_path, "test")
    assert pairs(msvd) == [("vidB", "two men"), ("vidB", "men talk"), ("vidA", "a dog runs")]
    with pytest.raises(InputNotFoundError, match="train_list.txt"):
        read_msvd(tmp_path, "train")
    with pytest.raises(DataError, match="split must be one of"):
        read_msvd(tmp_path, "dev")


class Exploit:
    """A pickle that would run a command when loaded by pickle.load."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_the_caption_pickle_reader_refuses_anything_but_plain_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "raw-captions.pkl"
    path.write_bytes(pickle.dumps({"vid": [["a", "b"]], "n": (1, 2.5, None, True), "s": {b"x"}}))
    assert load_plain_pickle(path) == {"vid": [["a", "b"]], "n": (1, 2.5, None, True), "s": {b"x"}}
    path.write_bytes(pickle.dumps({"vid": Exploit()}))
    with pytest.raises(DataError, match=r"raw-captions.pkl: refusing to unpickle (posix|os|nt)\.system"):
        load_plain_pickle(path)
    assert not (tmp_path / "pwned").exists()
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable pickle"):
        load_plain_pickle(path)


def test_vatex_reads_english_captions(tmp_path):
    folder = tmp_path / "vatex_data"
    folder.mkdir()
    (folder / "val_list.txt").write_text("abc_000001_000011\n")
    (folder / "vatex_data.json").write_text(json.dumps(
        {"abc_000001_000011": {"enCap": ["one", "two"], "chCap": ["一", "二"]}}))
    assert pairs(read_vatex(tmp_path, "val")) == [("abc_000001_000011", "one"), ("abc_000001_000011", "two")]
    (folder / "test_list.txt").write_text("missing\n")
    with pytest.raises(DataError, match="no 'enCap' captions for video 'missing'"):
        read_vatex(tmp_path, "test")


def test_didemo_joins_a_videos_descriptions_into_one_paragraph(tmp_path):
    (tmp_path / "test_list.txt").write_text("v1.mp4\nv2.m4v\n")
    items = [{"video": "v2.m4v", "description": "a ball rolls", "times": [[0, 0]]},
             {"video": "v1.mp4", "description": "a dog", "times": [[1, 2]]},
             {"video": "v3.mp4", "description": "unlisted", "times": [[0, 1]]},
             {"video": "v2.m4v", "description": "it stops", "times": [[2, 3]]}]
    (tmp_path / "test_data.json").write_text(json.dumps(items))
    didemo = read_didemo(tmp_path, "test")
    assert pairs(didemo) == [("v2", "a ball rolls it stops"), ("v1", "a dog")]   # first appearance in the JSON


def test_activitynet_joins_sentences_and_names_files_without_the_v_prefix(tmp_path):
    (tmp_path / "val_ids.json").write_text(json.dumps(["v_abc", "v_xyz", "v_abc"]))
    (tmp_path / "val_1.json").write_text(json.dumps({
        "v_abc": {"duration": 10.5, "timestamps": [[0, 3], [3, 9]], "sentences": ["A man runs.", " He jumps."]},
        "v_xyz": {"duration": 4.0, "timestamps": [[0, 4]], "sentences": ["Rain."]}}))
    anet = read_activitynet(tmp_path, "val")
    assert pairs(anet) == [("abc", "A man runs.  He jumps."), ("xyz", "Rain.")]
    with pytest.raises(DataError, match="split must be one of train, val"):
        read_activitynet(tmp_path, "test")


def test_json_lines_format_and_its_errors(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('\ufeff{"video": "clips/a.mp4", "captions": ["left", "moves left"]}\n\n'
                    '{"video": "clips/b", "captions": ["up"]}\n')
    lines = read_caption_lines(path)
    assert pairs(lines) == [("clips/a.mp4", "left"), ("clips/a.mp4", "moves left"), ("clips/b", "up")]
    path.write_text('{"video": "a.mp4", "captions": ["x"]}\n{"video": "b.mp4", "caption": "y"}\n')
    with pytest.raises(DataError, match=r"captions.jsonl:2: expected"):
        read_caption_lines(path)
    path.write_text('{"video": "a.mp4", "captions": []}\n')
    with pytest.raises(DataError, match=r"captions.jsonl:1: video 'a.mp4' has no caption"):
        read_caption_lines(path)
    path.write_text('{"video": "a.mp4", "captions": ["x"]\n')
    with pytest.raises(DataError, match=r"captions.jsonl:1: not valid JSON"):
        read_caption_lines(path)


def test_video_location_finds_frame_folders_and_video_files(tmp_path):
    (tmp_path / "video1").mkdir()
    (tmp_path / "video2.webm").write_bytes(b"")
    assert video_location(tmp_path, "video1") == str(tmp_path / "video1")
    assert video_location(tmp_path, "video2") == str(tmp_path / "video2.webm")
    with pytest.raises(InputNotFoundError, match="video 'video3' not found under"):
        video_location(tmp_path, "video3")
