"""The dataset-preparer registry and its command line: every registered preparer declares exactly its build
keywords as options and builds on a tiny fixture, from keywords and from the command line alike; input errors are
one line and status 2; the scripts in ``datasets/`` still run."""
from __future__ import annotations

import argparse
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from side4video.prep import PREPARERS, Preparer, SplitResult
from side4video.prep.cli import _run, build_lists_main, build_parser, extract_frames_main, main
from side4video.prep.listio import read_label_csv, write_lines

REPO = Path(__file__).resolve().parents[2]


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _frames(folder: Path, count: int, tmpl: str) -> None:
    _touch(*(folder / tmpl.format(i) for i in range(1, count + 1)))


# -- one tiny annotation set per dataset: name -> writer returning the build keywords (out_dir added later) ---------
def _kinetics(root: Path) -> dict[str, Any]:
    (root / "train.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,aaa,0,10,train\n"
                                    "zumba,bbb,5,15,train\n")
    (root / "val.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,ccc,1,11,val\n")
    _touch(*(root / "videos" / rel for rel in ("abseiling/aaa_000000_000010.mp4", "zumba/bbb_000005_000015.mp4",
                                               "zumba/ccc_000001_000011.mp4")))
    return {"train_csv": str(root / "train.csv"), "val_csv": str(root / "val.csv"),
            "video_root": str(root / "videos"), "layout": "class", "exts": (".mp4",)}


def _sthv1(root: Path) -> dict[str, Any]:
    (root / "labels.csv").write_text("Pushing something from left to right\nHolding something\n")
    (root / "train.csv").write_text("10;Holding something\n11;Pushing something from left to right\n")
    (root / "val.csv").write_text("12;Holding something\n")
    for vid in ("10", "11", "12"):
        _frames(root / "frames" / vid, 3, "{:05d}.jpg")
    return {"labels": str(root / "labels.csv"), "train": str(root / "train.csv"), "val": str(root / "val.csv"),
            "frames_root": str(root / "frames"), "tmpl": "{:05d}.jpg", "min_frames": 2}


def _sthv2(root: Path) -> dict[str, Any]:
    (root / "labels.json").write_text(json.dumps({"Holding something": "0", "Removing something, revealing": "1"}))
    (root / "train.json").write_text(json.dumps([{"id": "7", "template": "Holding [something]"},
                                                 {"id": "8", "template": "Removing [something], revealing"}]))
    (root / "validation.json").write_text(json.dumps([{"id": "9", "template": "Holding [something]"}]))
    for vid in ("7", "8", "9"):
        _frames(root / "frames" / vid, 4, "{:06d}.jpg")
    return {"labels": str(root / "labels.json"), "train": str(root / "train.json"),
            "val": str(root / "validation.json"), "frames_root": str(root / "frames")}


def _ucf101(root: Path) -> dict[str, Any]:
    splits = root / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 Archery\n2 YoYo\n")
    (splits / "trainlist02.txt").write_text("Archery/v_Archery_g08_c01.avi 1\nYoYo/v_YoYo_g08_c01.avi 2\n")
    (splits / "testlist02.txt").write_text("YoYo/v_YoYo_g01_c01.avi\n")
    return {"splits_dir": str(splits), "split": 2}


def _hmdb51(root: Path) -> dict[str, Any]:
    splits = root / "splits"
    splits.mkdir()
    (splits / "kick_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (splits / "wave_test_split1.txt").write_text("d.avi 1\n")
    _touch(root / "videos" / "kick" / "a.avi", root / "videos" / "kick" / "b.avi", root / "videos" / "wave" / "d.avi")
    return {"splits_dir": str(splits), "split": 1, "video_root": str(root / "videos")}


TINY_DATASETS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "kinetics": _kinetics, "sthv1": _sthv1, "sthv2": _sthv2, "ucf101": _ucf101, "hmdb51": _hmdb51}


def _option_parser(preparer: type[Preparer]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    preparer.add_arguments(parser)
    return parser


def _argv(name: str, keywords: dict[str, Any]) -> list[str]:
    """The command line that asks for ``keywords``: each keyword through the option whose dest it is."""
    option = {action.dest: action.option_strings[0] for action in _option_parser(PREPARERS.get(name))._actions
              if action.option_strings}
    argv = [name]
    for key, value in keywords.items():
        argv += [option[key], ",".join(value) if isinstance(value, tuple) else str(value)]
    return argv


def _written(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.iterdir())}


def test_the_registry_holds_the_five_datasets():
    assert sorted(PREPARERS.names()) == ["hmdb51", "kinetics", "sthv1", "sthv2", "ucf101"]
    assert sorted(TINY_DATASETS) == sorted(PREPARERS.names())


@pytest.mark.parametrize("name", PREPARERS.names())
def test_every_preparer_declares_its_build_keywords_as_options(name):
    preparer = PREPARERS.get(name)
    parameters = inspect.signature(preparer.build).parameters.values()
    assert all(p.kind is p.KEYWORD_ONLY for p in parameters), f"{name}: build must be keyword-only"
    dests = {action.dest for action in _option_parser(preparer)._actions if action.dest != "help"}
    assert dests == {p.name for p in parameters}


@pytest.mark.parametrize("name", PREPARERS.names())
def test_every_preparer_builds_from_keywords_and_from_the_command_line(name, tmp_path, capsys):
    assert name in TINY_DATASETS, f"write a tiny annotation set for the preparer '{name}' in TINY_DATASETS"
    keywords = TINY_DATASETS[name](tmp_path)
    results = PREPARERS.get(name).build(out_dir=str(tmp_path / "by_keywords"), **keywords)
    assert [r.split.split("_")[0] for r in results] == ["train", "val"]
    assert all(isinstance(r, SplitResult) and r.kept > 0 and r.missing == 0 for r in results)
    assert all(r.list_path.read_text().count("\n") == r.kept for r in results)
    assert len(read_label_csv(tmp_path / "by_keywords" / "labels.csv")) == 2

    argv = _argv(name, keywords) + ["--out_dir", str(tmp_path / "by_cli")]
    assert main(argv) == 0
    assert build_lists_main(argv) == 0
    assert _written(tmp_path / "by_cli") == _written(tmp_path / "by_keywords")
    assert "error" not in capsys.readouterr().err


def test_a_registered_preparer_becomes_a_subcommand(tmp_path, monkeypatch):
    """What a new dataset takes: one class registered with one line (and its module imported)."""
    monkeypatch.setattr(PREPARERS, "_entries", dict(PREPARERS.items()))     # registered for this test only
    built = {}

    @PREPARERS.register("tiny")
    class Tiny(Preparer):
        summary = "a dataset of one video"

        @staticmethod
        def add_arguments(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--out_dir", required=True)
            parser.add_argument("--copies", type=int, default=1)

        @staticmethod
        def build(*, out_dir: str, copies: int = 1) -> list[SplitResult]:
            built.update(out_dir=out_dir, copies=copies)
            write_lines(Path(out_dir) / "train_videos.txt", ["a.mp4 0"] * copies)
            return []

    _, subcommands = build_parser()
    assert "tiny" in subcommands and "frames" in subcommands
    assert main(["tiny", "--out_dir", str(tmp_path), "--copies", "2"]) == 0
    assert built == {"out_dir": str(tmp_path), "copies": 2}
    assert (tmp_path / "train_videos.txt").read_text() == "a.mp4 0\na.mp4 0\n"


def test_input_errors_are_one_line_and_status_2(tmp_path, capsys):
    assert main(["ucf101", "--splits_dir", str(tmp_path / "nowhere"), "--out_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: annotation file not found: {tmp_path / 'nowhere' / 'classInd.txt'}\n"

    assert main(["hmdb51", "--splits_dir", str(tmp_path / "nowhere"), "--out_dir", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"error: splits folder not found: {tmp_path / 'nowhere'}\n"

    keywords = _kinetics(tmp_path)
    (tmp_path / "val.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,ccc,one,11,val\n")
    assert main(_argv("kinetics", keywords) + ["--out_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'val.csv'}:2: time_start/time_end must be numbers") and \
        err.count("\n") == 1

    for run_frames in (lambda argv: main(["frames", *argv]), extract_frames_main):
        assert run_frames([str(tmp_path / "no_videos"), str(tmp_path / "frames")]) == 2
        assert capsys.readouterr().err == f"error: {tmp_path / 'no_videos'} is neither a folder nor a list file\n"


def test_usage_errors_exit_2_naming_the_rule(tmp_path, capsys):
    keywords = _hmdb51(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(_argv("hmdb51", keywords) + ["--out_dir", str(tmp_path / "o"), "--frames_root", str(tmp_path)])
    assert stop.value.code == 2
    assert "give --frames_root (frames lists) or --video_root (video lists), not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        extract_frames_main([str(tmp_path), str(tmp_path / "f"), "--workers", "0"])
    assert stop.value.code == 2 and "--workers must be >= 1" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        _run(lambda: 1 / 0)


def test_the_dataset_scripts_still_run_as_scripts():
    scripts = {name: subprocess.Popen([sys.executable, str(REPO / "datasets" / name), "--help"], text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name in ("build_lists.py", "extract_frames.py")}
    outputs = {name: process.communicate(timeout=300) for name, process in scripts.items()}
    assert all(process.returncode == 0 for process in scripts.values()), outputs
    build_help, extract_help = outputs["build_lists.py"][0], outputs["extract_frames.py"][0]
    assert build_help.startswith("usage: build_lists.py")
    subcommands = re.findall(r"^    (\w+) ", build_help, flags=re.MULTILINE)
    assert subcommands == PREPARERS.names()          # the list builders, without the frames command
    assert extract_help.startswith("usage: extract_frames.py") and "--short_side" in extract_help
