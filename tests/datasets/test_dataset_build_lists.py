"""The list builders (side4video.prep, run as datasets/build_lists.py) on tiny fabricated annotation sets: exact
output lines, missing-sample reports and errors that name the file and line of malformed input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from side4video.errors import DataError
from side4video.prep.hmdb51 import HMDB51
from side4video.prep.kinetics import Kinetics
from side4video.prep.listio import read_label_csv, write_marker
from side4video.prep.sthv1 import SomethingSomethingV1
from side4video.prep.sthv2 import SomethingSomethingV2
from side4video.prep.ucf101 import UCF101

REPO = Path(__file__).resolve().parents[2]
K400_LABELS = REPO / "datasets" / "labels" / "kinetics_400_labels.csv"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# --------------------------------------------------------------------------------------------------
# Kinetics
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def kinetics_csvs(tmp_path: Path) -> tuple[Path, Path]:
    train = tmp_path / "kinetics_400_train.csv"
    train.write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,aaa,0,10,train,0\n"
        "air drumming,bbb,5,15,train,0\n"
        "applauding,ccc,20.0,30.0,train,0\n"      # its video is missing below
    )
    val = tmp_path / "kinetics_400_val.csv"
    val.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        '"air drumming",ddd,1,11,val\n'
    )
    return train, val


def test_kinetics_video_lists_class_layout(tmp_path, kinetics_csvs):
    train, val = kinetics_csvs
    videos = tmp_path / "videos"
    for rel in ("abseiling/aaa_000000_000010.mp4", "air_drumming/bbb_000005_000015.mp4",
                "air_drumming/ddd_000001_000011.mkv"):
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).touch()
    out = tmp_path / "lists"
    res = Kinetics.build(train_csv=str(train), val_csv=str(val), out_dir=str(out), labels=str(K400_LABELS),
                         video_root=str(videos))

    # ids come from the shipped K400 CSV: abseiling 0, air drumming 1, applauding 3
    assert lines(out / "train_videos.txt") == ["abseiling/aaa_000000_000010.mp4 0",
                                               "air_drumming/bbb_000005_000015.mp4 1"]
    assert lines(out / "val_videos.txt") == ["air_drumming/ddd_000001_000011.mkv 1"]
    assert lines(out / "missing_train.txt") == ["applauding/ccc_000020_000030\tvideo not found"]
    assert not (out / "missing_val.txt").exists()
    assert [(r.kept, r.missing) for r in res] == [(2, 1), (1, 0)]
    assert read_label_csv(out / "labels.csv") == read_label_csv(K400_LABELS)


def test_kinetics_frames_list_flat_layout_and_sorted_labels(tmp_path, kinetics_csvs, frames_factory):
    train, val = kinetics_csvs
    frames = tmp_path / "frames"
    frames_factory(frames / "aaa_000000_000010", 3, "img_{:05d}.jpg")
    frames_factory(frames / "bbb_000005_000015", 5, "img_{:05d}.jpg")
    frames_factory(frames / "ccc_000020_000030", 2, "img_{:05d}.jpg")
    (frames / "ccc_000020_000030" / "notes.txt").touch()        # not a frame: not counted
    frames_factory(frames / "ddd_000001_000011", 4, "img_{:05d}.jpg")
    out = tmp_path / "lists"
    Kinetics.build(train_csv=str(train), val_csv=str(val), out_dir=str(out), frames_root=str(frames), layout="flat")

    # without --labels the ids are the sorted training class names
    assert read_label_csv(out / "labels.csv") == ["abseiling", "air drumming", "applauding"]
    assert lines(out / "train_frames.txt") == ["aaa_000000_000010 3 0", "bbb_000005_000015 5 1",
                                               "ccc_000020_000030 2 2"]
    assert lines(out / "val_frames.txt") == ["ddd_000001_000011 4 1"]

    # folders named by the bare youtube id (as in the reference K400 validation list) are found by 'auto'
    (frames / "ddd_000001_000011").rename(frames / "ddd")
    Kinetics.build(train_csv=str(train), val_csv=str(val), out_dir=str(out), frames_root=str(frames))
    assert lines(out / "val_frames.txt") == ["ddd 4 1"]


def test_kinetics_unchecked_video_list_and_split_placeholder(tmp_path, kinetics_csvs):
    train, val = kinetics_csvs
    out = tmp_path / "plain"
    Kinetics.build(train_csv=str(train), val_csv=str(val), out_dir=str(out), layout="class")
    assert lines(out / "train_videos.txt") == ["abseiling/aaa_000000_000010.mp4 0",
                                               "air_drumming/bbb_000005_000015.mp4 1",
                                               "applauding/ccc_000020_000030.mp4 2"]

    # separate train/val folders through the {split} placeholder
    for rel in ("train/aaa_000000_000010.mp4", "val/ddd_000001_000011.mp4"):
        (tmp_path / "k" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "k" / rel).touch()
    out = tmp_path / "split"
    Kinetics.build(train_csv=str(train), val_csv=str(val), out_dir=str(out), video_root=str(tmp_path / "k" / "{split}"))
    assert lines(out / "train_videos.txt") == ["aaa_000000_000010.mp4 0"]
    assert lines(out / "val_videos.txt") == ["ddd_000001_000011.mp4 1"]
    assert len(lines(out / "missing_train.txt")) == 2


def test_kinetics_unfinished_extraction_is_missing(tmp_path, kinetics_csvs, frames_factory):
    train, val = kinetics_csvs
    frames = tmp_path / "frames"
    frames_factory(frames / "abseiling" / "aaa_000000_000010", 3, "img_{:05d}.jpg")
    frames_factory(frames / "air_drumming" / "bbb_000005_000015", 5, "img_{:05d}.jpg")
    write_marker(frames, "abseiling/aaa_000000_000010", 3)       # finished
    write_marker(frames, "air_drumming/ddd_000001_000011", 9)    # marker but no folder
    out = tmp_path / "lists"
    Kinetics.build(train_csv=str(train), val_csv=str(val), out_dir=str(out), frames_root=str(frames))
    assert lines(out / "train_frames.txt") == ["abseiling/aaa_000000_000010 3 0"]
    missing = lines(out / "missing_train.txt")
    assert missing[0].startswith("air drumming/bbb_000005_000015\tframe folder 'air_drumming/bbb_000005_000015' "
                                 "is not finished")
    assert missing[1] == "applauding/ccc_000020_000030\tframe folder not found"
    assert lines(out / "missing_val.txt") == ["air drumming/ddd_000001_000011\tframe folder not found"]


def test_kinetics_malformed_rows_name_file_and_line(tmp_path, kinetics_csvs):
    train, val = kinetics_csvs
    bad = tmp_path / "bad.csv"
    bad.write_text("label,youtube_id,time_start,time_end,split\nabseiling,aaa,0,10,train\nabseiling,bbb,zero,10,train\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: time_start/time_end must be numbers"):
        Kinetics.build(train_csv=str(bad), val_csv=str(val), out_dir=str(tmp_path / "o"))

    bad.write_text("label,youtube_id,time_start,time_end,split\nabseiling,aaa,0,10\n")
    with pytest.raises(DataError, match=r"bad\.csv:2: expected 5 fields"):
        Kinetics.build(train_csv=str(bad), val_csv=str(val), out_dir=str(tmp_path / "o"))

    bad.write_text("name,youtube_id,time_start,time_end,split\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: header lacks column\(s\) label"):
        Kinetics.build(train_csv=str(bad), val_csv=str(val), out_dir=str(tmp_path / "o"))

    bad.write_text("label,youtube_id,time_start,time_end,split\nnot a kinetics class,aaa,0,10,val\n")
    with pytest.raises(DataError, match=r"bad\.csv:2: class 'not a kinetics class' is not in"):
        Kinetics.build(train_csv=str(train), val_csv=str(bad), out_dir=str(tmp_path / "o"), labels=str(K400_LABELS))


# --------------------------------------------------------------------------------------------------
# Something-Something v1
# --------------------------------------------------------------------------------------------------

STH_NAMES = ["Pushing something from left to right",
             "Putting something, something and something on the table",
             "Holding something"]


def write_sthv1(tmp_path: Path) -> tuple[Path, Path, Path]:
    labels = tmp_path / "something-something-v1-labels.csv"
    labels.write_text("\n".join(STH_NAMES) + "\n")           # file order is not the id order
    train = tmp_path / "something-something-v1-train.csv"
    train.write_text("100218;Holding something\n"
                     "42;Putting something, something and something on the table\n"
                     "7;Pushing something from left to right\n")
    val = tmp_path / "something-something-v1-validation.csv"
    val.write_text("9;Pushing something from left to right\n")
    return labels, train, val


def test_sthv1_frames_lists(tmp_path, frames_factory):
    labels, train, val = write_sthv1(tmp_path)
    frames = tmp_path / "20bn-something-something-v1"
    frames_factory(frames / "100218", 42, "{:05d}.jpg")
    frames_factory(frames / "42", 30, "{:05d}.jpg")
    frames_factory(frames / "9", 12, "{:05d}.jpg")              # video 7 has no folder
    out = tmp_path / "lists"
    SomethingSomethingV1.build(labels=str(labels), train=str(train), val=str(val), out_dir=str(out),
                               frames_root=str(frames))

    # ids = sorted names; label CSV names lose their commas like Side4Video's sth_labels.csv
    assert read_label_csv(out / "labels.csv") == [
        "Holding something", "Pushing something from left to right",
        "Putting something something and something on the table"]
    assert lines(out / "train_frames.txt") == ["100218 42 0", "42 30 2"]
    assert lines(out / "missing_train.txt") == ["7\tframe folder not found"]
    assert lines(out / "val_frames.txt") == ["9 12 1"]


def test_sthv1_malformed(tmp_path):
    labels, train, val = write_sthv1(tmp_path)
    train.write_text("1;Holding something\n2 Holding something\n")
    with pytest.raises(DataError, match=r"something-something-v1-train\.csv:2: expected 'id;label'"):
        SomethingSomethingV1.build(labels=str(labels), train=str(train), val=str(val), out_dir=str(tmp_path / "o"),
                                   frames_root=str(tmp_path))
    train.write_text("\n1;Holding nothing\n")
    with pytest.raises(DataError, match=r"something-something-v1-train\.csv:2: label 'Holding nothing'"):
        SomethingSomethingV1.build(labels=str(labels), train=str(train), val=str(val), out_dir=str(tmp_path / "o"),
                                   frames_root=str(tmp_path))


# --------------------------------------------------------------------------------------------------
# Something-Something v2
# --------------------------------------------------------------------------------------------------

def write_sthv2(tmp_path: Path) -> tuple[Path, Path, Path]:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"Holding something": "0",
                                  "Pushing something from left to right": "1",
                                  "Removing something, revealing something behind": "2"}, indent=4))
    train = tmp_path / "train.json"
    train.write_text(json.dumps([
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something]", "placeholders": ["potato"]},
        {"id": "42326", "label": "removing a cup, revealing a pen behind",
         "template": "Removing [something], revealing [something] behind", "placeholders": ["a cup", "a pen"]},
        {"id": "100904", "label": "pushing a book from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a book"]},
    ], indent=1))
    val = tmp_path / "validation.json"
    val.write_text(json.dumps([{"id": "74225", "label": "pushing x from left to right",
                                "template": "Pushing [something] from left to right", "placeholders": ["x"]}]))
    return labels, train, val


def test_sthv2_video_and_frames_lists(tmp_path, frames_factory):
    labels, train, val = write_sthv2(tmp_path)
    videos = tmp_path / "20bn-something-something-v2"
    videos.mkdir()
    for vid in ("78687", "42326", "74225"):
        (videos / f"{vid}.webm").touch()
    out = tmp_path / "videos_lists"
    SomethingSomethingV2.build(labels=str(labels), train=str(train), val=str(val), out_dir=str(out),
                               video_root=str(videos))
    assert lines(out / "train_videos.txt") == ["78687.webm 0", "42326.webm 2"]
    assert lines(out / "missing_train.txt") == ["100904\tvideo not found"]
    assert lines(out / "val_videos.txt") == ["74225.webm 1"]
    assert read_label_csv(out / "labels.csv") == ["Holding something", "Pushing something from left to right",
                                                  "Removing something revealing something behind"]

    frames = tmp_path / "frames"
    for vid, n in (("78687", 40), ("42326", 33), ("100904", 51), ("74225", 20)):
        frames_factory(frames / vid, n, "{:06d}.jpg")
    out = tmp_path / "frames_lists"
    SomethingSomethingV2.build(labels=str(labels), train=str(train), val=str(val), out_dir=str(out),
                               frames_root=str(frames))
    assert lines(out / "train_frames.txt") == ["78687 40 0", "42326 33 2", "100904 51 1"]
    assert lines(out / "val_frames.txt") == ["74225 20 1"]


def test_sthv2_malformed_entry_reports_its_line(tmp_path):
    labels, train, val = write_sthv2(tmp_path)
    train.write_text('[\n  {"id": "1", "template": "Holding [something]"},\n'
                     '  {"id": "2", "label": "no template here"}\n]\n')
    with pytest.raises(DataError, match=r"train\.json:3: entry needs 'id' and 'template'"):
        SomethingSomethingV2.build(labels=str(labels), train=str(train), val=str(val), out_dir=str(tmp_path / "o"))
    train.write_text('[\n  {"id": "1", "template": "Juggling [something]"}\n]\n')
    with pytest.raises(DataError, match=r"train\.json:2: entry id='1': template 'Juggling \[something\]'"):
        SomethingSomethingV2.build(labels=str(labels), train=str(train), val=str(val), out_dir=str(tmp_path / "o"))
    train.write_text('[\n  {"id": "1", "template": "Holding [something]"}\n  {"id": "2"}\n]\n')
    with pytest.raises(DataError, match=r"train\.json:3: expected ',' or ']'"):
        SomethingSomethingV2.build(labels=str(labels), train=str(train), val=str(val), out_dir=str(tmp_path / "o"))


# --------------------------------------------------------------------------------------------------
# UCF101
# --------------------------------------------------------------------------------------------------

def write_ucf(tmp_path: Path) -> Path:
    d = tmp_path / "ucfTrainTestlist"
    d.mkdir()
    (d / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 HandstandPushups\n")
    (d / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                       "HandstandPushups/v_HandStandPushups_g08_c01.avi 3\n"
                                       "Archery/v_Archery_g08_c02.avi 2\n")
    (d / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
                                      "HandstandPushups/v_HandStandPushups_g01_c01.avi\n")
    return d


def test_ucf101_lists(tmp_path, frames_factory):
    d = write_ucf(tmp_path)
    out = tmp_path / "lists"
    UCF101.build(splits_dir=str(d), split=1, out_dir=str(out))
    assert lines(out / "train_split1_videos.txt") == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0",
                                                      "HandstandPushups/v_HandStandPushups_g08_c01.avi 2",
                                                      "Archery/v_Archery_g08_c02.avi 1"]
    assert lines(out / "val_split1_videos.txt") == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 0",
                                                    "HandstandPushups/v_HandStandPushups_g01_c01.avi 2"]
    assert read_label_csv(out / "labels.csv") == ["ApplyEyeMakeup", "Archery", "HandstandPushups"]

    frames = tmp_path / "frames"
    frames_factory(frames / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01", 164, "img_{:05d}.jpg")
    frames_factory(frames / "HandstandPushups" / "v_HandStandPushups_g08_c01", 90, "img_{:05d}.jpg")
    frames_factory(frames / "HandstandPushups" / "v_HandStandPushups_g01_c01", 77, "img_{:05d}.jpg")
    out = tmp_path / "frames_lists"
    UCF101.build(splits_dir=str(d), split=1, out_dir=str(out), frames_root=str(frames))
    assert lines(out / "train_split1_frames.txt") == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01 164 0",
                                                      "HandstandPushups/v_HandStandPushups_g08_c01 90 2"]
    assert lines(out / "val_split1_frames.txt") == ["HandstandPushups/v_HandStandPushups_g01_c01 77 2"]
    assert len(lines(out / "missing_train_split1.txt")) == 1


def test_ucf101_malformed(tmp_path):
    d = write_ucf(tmp_path)
    (d / "trainlist01.txt").write_text("Archery/v_Archery_g08_c02.avi 2\nArchery/v_Archery_g08_c03.avi two\n")
    with pytest.raises(DataError, match=r"trainlist01\.txt:2: class index 'two' is not an integer"):
        UCF101.build(splits_dir=str(d), split=1, out_dir=str(tmp_path / "o"))
    (d / "trainlist01.txt").write_text("Archery/v_Archery_g08_c02.avi 1\n")
    with pytest.raises(DataError, match=r"trainlist01\.txt:1: index 1 \(ApplyEyeMakeup\) disagrees"):
        UCF101.build(splits_dir=str(d), split=1, out_dir=str(tmp_path / "o"))
    (d / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 Archery\n")
    with pytest.raises(DataError, match=r"classInd\.txt:2: class index 3 out of order"):
        UCF101.build(splits_dir=str(d), split=1, out_dir=str(tmp_path / "o"))


# --------------------------------------------------------------------------------------------------
# HMDB51
# --------------------------------------------------------------------------------------------------

def write_hmdb(tmp_path: Path) -> Path:
    d = tmp_path / "testTrainMulti_7030_splits"
    d.mkdir()
    (d / "kick_ball_test_split1.txt").write_text("Goal_kick_ball_f_cm_np1_ba_med_0.avi 1 \n"
                                                 "Amazing_kick_ball_f_cm_np1_fr_bad_1.avi 2 \n")
    (d / "brush_hair_test_split1.txt").write_text("April_09_brush_hair_u_nm_np1_ba_goo_0.avi 2 \n"
                                                  "Brushing_brush_hair_h_nm_np1_le_goo_1.avi 0 \n"
                                                  "Blonde_brush_hair_u_cm_np2_ba_goo_2.avi 1 \n")
    (d / "kick_test_split1.txt").write_text("Karate_kick_f_cm_np1_le_bad_0.avi 1\n")
    (d / "kick_test_split2.txt").write_text("Karate_kick_f_cm_np1_le_bad_0.avi 2\n")   # other split: ignored
    return d


def test_hmdb51_lists(tmp_path):
    d = write_hmdb(tmp_path)
    out = tmp_path / "lists"
    HMDB51.build(splits_dir=str(d), split=1, out_dir=str(out))
    assert read_label_csv(out / "labels.csv") == ["brush_hair", "kick", "kick_ball"]
    assert lines(out / "train_split1_videos.txt") == [
        "brush_hair/Blonde_brush_hair_u_cm_np2_ba_goo_2.avi 0",
        "kick/Karate_kick_f_cm_np1_le_bad_0.avi 1",
        "kick_ball/Goal_kick_ball_f_cm_np1_ba_med_0.avi 2"]
    assert lines(out / "val_split1_videos.txt") == [
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi 0",
        "kick_ball/Amazing_kick_ball_f_cm_np1_fr_bad_1.avi 2"]


def test_hmdb51_malformed(tmp_path):
    d = write_hmdb(tmp_path)
    (d / "kick_test_split1.txt").write_text("a.avi 1\nb.avi 3\n")
    with pytest.raises(DataError, match=r"kick_test_split1\.txt:2: expected 'video\.avi 0\|1\|2'"):
        HMDB51.build(splits_dir=str(d), split=1, out_dir=str(tmp_path / "o"))


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def test_cli_help_and_error_exit(tmp_path):
    script = str(REPO / "datasets" / "build_lists.py")
    r = subprocess.run([sys.executable, script, "ucf101", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--splits_dir" in r.stdout

    d = write_ucf(tmp_path)
    r = subprocess.run([sys.executable, script, "ucf101", "--splits_dir", str(d), "--split", "1",
                        "--out_dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "train_split1_videos.txt").is_file()

    (d / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\nUnknownClass/v_x.avi\n")
    r = subprocess.run([sys.executable, script, "ucf101", "--splits_dir", str(d),
                        "--out_dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{d / 'testlist01.txt'}:2: folder 'UnknownClass'" in r.stderr
