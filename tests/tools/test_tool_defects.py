"""Defects of the tools, each checked as a class of inputs: non-finite scores in a fusion, damaged middle frames
that check_videos let through, training features that are the validation features, and test views that coincide."""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from side4video.data.toy import write_frame_folder
from side4video.data.transforms import distinct_view_count, eval_crop_geometry
from side4video.errors import DataError
from side4video.tools import check_videos, extract_features, feature_baselines, fuse_scores


def one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    return lines[0]


# -- 1. fuse_scores: NaN / inf scores -----------------------------------------------------------------------------
IDS = ["v/1", "v/2", "v/3", "v/4"]
LABELS = np.array([0, 1, 2, 0])
GOOD = np.array([[0.7, 0.1, 0.2], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.5, 0.3, 0.2]], dtype=np.float32)


def score_file(path, scores, ids=IDS):
    np.savez_compressed(path, scores=np.asarray(scores, dtype=np.float32), labels=LABELS, indices=np.arange(len(ids)),
                        video_ids=np.array(ids), class_names=np.array(["a", "b", "c"]), protocol=np.array("8x1x1"),
                        score_average=np.array("prob"))
    return str(path)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_fusion_refuses_non_finite_scores_naming_file_video_and_count(tmp_path, capsys, bad_value):
    good = score_file(tmp_path / "good.npz", GOOD)
    scores = GOOD.copy()
    scores[1, 2] = bad_value          # video v/2
    scores[3, :] = bad_value          # and v/4: two videos affected
    broken = score_file(tmp_path / "broken.npz", scores)
    with pytest.raises(DataError) as caught:
        fuse_scores.fuse_files([good, broken])
    message = str(caught.value)
    assert "broken.npz" in message and "'v/2'" in message and "2 of 4 videos" in message, message
    assert "\n" not in message
    assert fuse_scores.main([good, broken, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "broken.npz" in one_error_line(captured.err)
    # the bad file in first position, and a bad file read on its own, are refused the same way
    with pytest.raises(DataError, match="broken.npz"):
        fuse_scores.fuse_files([broken, good])
    with pytest.raises(DataError, match="non-finite"):
        fuse_scores.read_scores(broken)


def test_fusion_refuses_non_finite_weights(tmp_path):
    a, b = score_file(tmp_path / "a.npz", GOOD), score_file(tmp_path / "b.npz", GOOD[::-1].copy())
    for weights in ([float("nan"), 1.0], [float("inf"), 1.0]):
        with pytest.raises(DataError, match="finite"):
            fuse_scores.fuse_files([a, b], weights)
    assert fuse_scores.fuse_files([a, b], [1.0, 2.0])["num_videos"] == 4


# -- 2. check_videos: every frame of a folder is checked --------------------------------------------------------
def frames(n, height=32, width=64):
    return np.random.default_rng(n).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


def jpeg_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frames(1)[0] + seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture()
def frame_root(tmp_path):
    """Folders of 5 frames whose first and last frames are fine; all but 'ok' have a damaged frame inside."""
    root = tmp_path / "frames"
    tmpl = "img_{:05d}.jpg"
    for name in ("ok", "truncated", "garbage", "zero", "headless", "two_bad", "resized"):
        write_frame_folder(str(root / name), frames(5), image_tmpl=tmpl)
    middle = root / "truncated" / "img_00003.jpg"
    middle.write_bytes(middle.read_bytes()[: len(middle.read_bytes()) // 2])         # cut: no end marker
    noise = np.random.default_rng(0).bytes(5000)
    (root / "garbage" / "img_00002.jpg").write_bytes(noise[:3000])                     # not an image at all
    (root / "zero" / "img_00004.jpg").write_bytes(b"")                                 # 0 bytes
    # start and end markers intact, nothing decodable between them: only decoding (--deep) finds it
    (root / "headless" / "img_00003.jpg").write_bytes(b"\xff\xd8" + noise[3000:].replace(b"\xff", b"\x00")
                                                      + b"\xff\xd9")
    Image.fromarray(frames(1, 16, 32)[0]).save(root / "resized" / "img_00003.jpg")       # whole, but another size
    for i in (2, 4):
        data = (root / "two_bad" / f"img_{i:05d}.jpg").read_bytes()
        (root / "two_bad" / f"img_{i:05d}.jpg").write_bytes(data[:-100])
    # PNG frames: a cut file has no IEND chunk
    write_frame_folder(str(root / "png_ok"), frames(4), image_tmpl="{:05d}.png")
    write_frame_folder(str(root / "png_cut"), frames(4), image_tmpl="{:05d}.png")
    png = root / "png_cut" / "00002.png"
    png.write_bytes(png.read_bytes()[:-40])
    return root


def run_check(tmp_path, root, lines, *extra, tmpl="img_{:05d}.jpg"):
    list_file = tmp_path / f"list{len(extra)}{tmpl[-3:]}.txt"
    list_file.write_text("".join(line + "\n" for line in lines))
    out = tmp_path / f"clean{len(extra)}{tmpl[-3:]}.txt"
    code = check_videos.main([str(list_file), "--root", str(root), "--image_tmpl", tmpl, "--workers", "2",
                              "--no_progress", "--out", str(out), *extra])
    return code, out.read_text()


def test_check_videos_finds_damaged_frames_between_first_and_last(tmp_path, frame_root, capsys):
    lines = ["ok 5 0", "truncated 5 1", "garbage 5 0", "zero 5 1", "two_bad 5 0", "headless 5 1", "resized 5 0"]
    code, clean = run_check(tmp_path, frame_root, lines)
    out = capsys.readouterr().out
    assert code == 1
    reported = {line.split()[1]: line for line in out.splitlines() if line.startswith("UNREADABLE")}
    assert set(reported) == {"truncated", "garbage", "zero", "two_bad"}, out
    assert "img_00003.jpg" in reported["truncated"] and "end marker" in reported["truncated"]
    assert "img_00002.jpg" in reported["garbage"]
    assert "img_00004.jpg" in reported["zero"] and "0 bytes" in reported["zero"]
    assert "2 of 5 frame files" in reported["two_bad"] and "img_00002.jpg" in reported["two_bad"]
    # the cheap check reads the markers only: a JPEG with both markers and garbage between them needs --deep
    assert clean == "ok 5 0\nheadless 5 1\nresized 5 0\n"

    code, clean = run_check(tmp_path, frame_root, lines, "--deep")
    out = capsys.readouterr().out
    assert code == 1 and clean == "ok 5 0\n"
    reported = {line.split()[1]: line for line in out.splitlines() if line.startswith("UNREADABLE")}
    assert set(reported) == {"truncated", "garbage", "zero", "two_bad", "headless", "resized"}, out
    assert "cannot decode img_00003.jpg" in reported["headless"]
    assert "frames differ in size: img_00003.jpg is 16x32, img_00001.jpg is 32x64" in reported["resized"]


def test_check_videos_png_frames_need_their_end_chunk(tmp_path, frame_root, capsys):
    code, clean = run_check(tmp_path, frame_root, ["png_ok 4 0", "png_cut 4 1"], tmpl="{:05d}.png")
    out = capsys.readouterr().out
    assert code == 1 and clean == "png_ok 4 0\n"
    assert any("png_cut" in line and "00002.png" in line and "IEND" in line for line in out.splitlines()), out


def test_check_frame_file_formats():
    """The per-file check on its own: JPEG markers, PNG chunks, other formats through PIL."""
    good_jpeg = jpeg_bytes(0)
    png, gif = io.BytesIO(), io.BytesIO()
    Image.fromarray(frames(1)[0]).save(png, format="PNG")
    Image.fromarray(frames(1)[0]).save(gif, format="GIF")
    cases = {"good.jpg": (good_jpeg, None), "padded.jpg": (good_jpeg + b"\x00" * 8, None),
             "cut.jpg": (good_jpeg[:-1], "end marker"), "good.png": (png.getvalue(), None),
             "cut.png": (png.getvalue()[:-12], "IEND"), "good.gif": (gif.getvalue(), None),
             "text.jpg": (b"hello, not an image", "not a readable image"), "empty.jpg": (b"", "0 bytes")}
    with tempfile.TemporaryDirectory() as folder:
        for name, (data, expected) in cases.items():
            path = os.path.join(folder, name)
            with open(path, "wb") as handle:
                handle.write(data)
            reason = check_videos.check_frame_file(path)
            if expected is None:
                assert reason is None, (name, reason)
            else:
                assert reason is not None and expected in reason, (name, reason)


# -- 3. feature_baselines: training and validation features of the same videos -----------------------------------
def feature_folder(path, ids, root="/data/frames", labels=None, sha="0" * 64):
    """A minimal extract_features output (index.json + one shard) with 4-dim embeddings."""
    path.mkdir(parents=True)
    labels = labels if labels is not None else [i % 2 for i in range(len(ids))]
    tensors, videos = {}, []
    for i, (video_id, label) in enumerate(zip(ids, labels)):
        key = f"video_{i}"
        tensors[key] = torch.randn(1, 2, 4, generator=torch.Generator().manual_seed(i)) + 3 * label
        videos.append({"index": i, "video_id": video_id, "label": label, "key": key, "shape": [1, 2, 4],
                       "dtype": "float32", "shard": 0, "file": "features-00000.safetensors"})
    save_file(tensors, str(path / "features-00000.safetensors"))
    index = {"format": extract_features.FORMAT, "arch": "tiny", "backbone": {"weights": "w"}, "backbone_sha256": sha,
             "feature": "embedding", "layers": None, "pool": None, "protocol": "2x1x1", "class_names": ["a", "b"],
             "videos": videos, "unreadable": [], "root": root, "list": "list.txt"}
    (path / "index.json").write_text(json.dumps(index))
    return str(path)


def test_baselines_refuse_validation_videos_among_the_training_features(tmp_path, capsys):
    train_ids = [f"train/{i:03d}" for i in range(8)]
    val_ids = [f"val/{i:03d}" for i in range(4)]
    train = feature_folder(tmp_path / "train", train_ids)
    val = feature_folder(tmp_path / "val", val_ids)
    # the same folder twice: every video overlaps
    assert feature_baselines.main(["--features", val, "--val_features", val, "--method", "knn", "--k", "3"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "4 of 4" in line and "'val/000'" in line and val in line
    # a training extraction that also holds two of the validation videos
    leaky = feature_folder(tmp_path / "leaky", train_ids + val_ids[2:])
    with pytest.raises(DataError) as caught:
        feature_baselines.run_baselines(leaky, val, methods=("knn",), k=3)
    assert "2 of 4" in str(caught.value) and "'val/002'" in str(caught.value) and "\n" not in str(caught.value)
    # separate videos run; the same relative ids under another root are other videos
    assert feature_baselines.main(["--features", train, "--val_features", val, "--method", "knn", "--k", "3",
                                   "--json"]) == 0
    other_root = feature_folder(tmp_path / "elsewhere", val_ids, root="/data/other_split")
    assert feature_baselines.run_baselines(other_root, val, methods=("knn",), k=3)["train_videos"] == 4
    # the same videos named through an equivalent root are the same videos
    same_root = feature_folder(tmp_path / "same", val_ids, root="/data/./frames/")
    with pytest.raises(DataError, match="4 of 4"):
        feature_baselines.run_baselines(same_root, val, methods=("knn",), k=3)
    capsys.readouterr()


# -- 4. extract_features: views that coincide --------------------------------------------------------------------
def test_distinct_view_count_from_the_view_parameters():
    # 64 x 80 frames, scale [64, 80], crop 64: (64 - 64) // 4 = 0 rows, so the corners of each column coincide
    _, geometry = eval_crop_geometry(64, 80, 64, (64, 80), 10)
    one_clip = np.arange(8)[None]
    assert distinct_view_count(one_clip, geometry) == 6
    _, geometry = eval_crop_geometry(256, 320, 224, 256, 10)
    assert distinct_view_count(one_clip, geometry) == 10
    same_clips = np.zeros((2, 8), dtype=np.int64)
    _, geometry = eval_crop_geometry(64, 80, 64, (64, 80), 3)
    assert distinct_view_count(same_clips, geometry) == 3
    # full-height three crops of a square frame all cut the same square
    _, geometry = eval_crop_geometry(100, 100, 64, 73, 3, "full_height")
    assert distinct_view_count(one_clip, geometry) == 1


def test_extraction_says_when_views_coincide_and_records_distinct_views(workspace, tmp_path, capsys):
    lines = Path(workspace.toy["val_frames_list"]).read_text().splitlines()[:2]
    list_file = tmp_path / "two.txt"
    list_file.write_text("\n".join(lines) + "\n")
    root = workspace.toy["frames_root"]

    def extract(out, *extra):
        code = extract_features.main(["--config", str(workspace.config), "--list", str(list_file), "--root", root,
                                      "--out", str(out), "--no_progress", *extra])
        assert code == 0
        return extract_features.read_index(out)

    # toy frames 64 x 80, scale [64, 80], crop 64: 10 crops are 3 boxes x 2 flips
    index = extract(tmp_path / "ten", "--test_crops", "10")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "distinct" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ")
    assert "6 distinct views of the 10 requested" in warnings[0] and "2 of 2 videos" in warnings[0], warnings
    assert index["distinct_views"] == {"requested": 10, "min": 6, "max": 6, "videos_with_duplicates": 2}
    assert [v["distinct_views"] for v in index["videos"]] == [6, 6]
    manifest = json.loads((tmp_path / "ten" / "features-00000.json").read_text())
    assert [v["distinct_views"] for v in manifest["videos"]] == [6, 6]
    # the views counted as duplicates really are: identical features (top-left == bottom-left, and flipped)
    tensors = load_file(str(tmp_path / "ten" / "features-00000.safetensors"))
    first = tensors[index["videos"][0]["key"]]
    torch.testing.assert_close(first[0], first[2], rtol=0, atol=0)
    torch.testing.assert_close(first[5], first[7], rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])

    # one crop, two clips of 12 frames with the TSN rule: all distinct, no warning
    tsn = ("--opts", "data.sampling_protocol=tsn")
    index = extract(tmp_path / "one", "--test_crops", "1", "--test_clips", "2", *tsn)
    assert "distinct" not in capsys.readouterr().err
    assert index["distinct_views"] == {"requested": 2, "min": 2, "max": 2, "videos_with_duplicates": 0}
    assert [v["distinct_views"] for v in index["videos"]] == [2, 2]
    # the kinetics rule (the toy config's) shifts its clips by int(linspace(0, F / T - 1, K)): 0 and 0 for 12 frames
    index = extract(tmp_path / "kinetics", "--test_crops", "1", "--test_clips", "2")
    assert "2 of 2 videos have only 1 distinct view of the 2 requested" in capsys.readouterr().err

    # a video listed with 2 frames: its two TSN clips take the same frames
    short = tmp_path / "short.txt"
    short.write_text(lines[0] + "\n" + " ".join([lines[1].split()[0], "2", lines[1].split()[-1]]) + "\n")
    code = extract_features.main(["--config", str(workspace.config), "--list", str(short), "--root", root,
                                  "--out", str(tmp_path / "short"), "--no_progress", "--test_clips", "2", *tsn])
    assert code == 0
    index = extract_features.read_index(tmp_path / "short")
    warning = [line for line in capsys.readouterr().err.splitlines() if "distinct" in line]
    assert len(warning) == 1 and "1 of 2 videos" in warning[0] and lines[1].split()[0] in warning[0], warning
    assert [v["distinct_views"] for v in index["videos"]] == [2, 1]
