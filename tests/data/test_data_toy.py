"""The toy dataset: reproducible files, list formats, decodability, and classes that need frame order."""
import json
import os

import decord
import numpy as np
import pytest

from side4video.data import read_annotation_list, read_label_names
from side4video.data.toy import CLASS_NAMES, SIZE_RANGE, generate_toy_dataset, render_clip, sample_trajectory

SMALL = dict(train_per_class=2, val_per_class=1, frames=12, height=32, width=40, workers=1)


def all_files(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    return out, generate_toy_dataset(str(out), seed=3, **SMALL)


def test_layout_counts_and_lists(toy):
    out, info = toy
    assert info["generated"] and info["num_classes"] == 8 and info["flip_pairs"] == [[0, 1], [4, 5]]
    assert read_label_names(info["label_list"]) == list(CLASS_NAMES)
    assert read_label_names(info["label_list"])[:2] == ["moving right", "moving left"]
    train = read_annotation_list(info["train_frames_list"], num_classes=8)
    val = read_annotation_list(info["val_frames_list"], num_classes=8)
    assert len(train) == 16 and len(val) == 8
    assert sorted(r.label for r in train) == sorted(list(range(8)) * 2)
    assert open(info["train_frames_list"]).readline().strip() == f"train/00001 12 {train[0].label}"
    assert open(info["train_videos_list"]).readline().strip() == f"train/00001.mp4 {train[0].label}"
    videos = read_annotation_list(info["val_videos_list"], num_classes=8)
    assert [(v.path, v.label) for v in videos] == [(r.path + ".mp4", r.label) for r in val]
    assert sorted(os.listdir(os.path.join(info["frames_root"], "train", "00001"))) == \
        [f"{i:05d}.jpg" for i in range(1, 13)]
    assert "flip_pairs: [[0, 1], [4, 5]]" in open(out / "README.txt").read()


def test_videos_decode_with_decord_and_match_the_frames(toy):
    _, info = toy
    for record in read_annotation_list(info["val_videos_list"]):
        reader = decord.VideoReader(os.path.join(info["videos_root"], record.path), num_threads=1)
        assert len(reader) == 12
        frames = reader.get_batch(list(range(12))).asnumpy()
        assert frames.shape == (12, 32, 40, 3)
    from PIL import Image
    jpeg = np.asarray(Image.open(os.path.join(info["frames_root"], "val", "00008", "00012.jpg")), dtype=float)
    assert np.abs(frames[-1].astype(float) - jpeg).mean() < 8  # same content in both formats


def test_deterministic_by_seed_and_skipped_when_complete(toy, tmp_path):
    out, _ = toy
    again = generate_toy_dataset(str(tmp_path / "again"), seed=3, **{**SMALL, "workers": 2})
    assert again["generated"]
    assert all_files(out) == all_files(tmp_path / "again")  # byte-identical, whatever the worker count
    assert generate_toy_dataset(str(tmp_path / "other"), seed=4, **SMALL)["generated"]
    first_frame = "frames/train/00001/00001.jpg"
    assert all_files(tmp_path / "other")[first_frame] != all_files(out)[first_frame]
    assert not generate_toy_dataset(str(out), seed=3, **SMALL)["generated"]
    assert json.load(open(out / "toy_meta.json"))["seed"] == 3
    regenerated = generate_toy_dataset(str(tmp_path / "other"), seed=4, **{**SMALL, "formats": ("frames",)})
    assert regenerated["generated"] and "videos_root" not in regenerated


def test_every_class_has_the_same_per_frame_distribution_of_attributes():
    """Position, angle and size are uniform at every frame in every class (KS distance to uniform)."""
    height, width, frames, n = 64, 80, 24, 1500
    short = min(height, width)
    ranges = dict(x=(0, width), y=(0, height), angle=(0, 360),
                  size=(SIZE_RANGE[0] * short, SIZE_RANGE[1] * short))
    grid = np.linspace(0, 1, 101)
    for label in range(8):
        rng = np.random.default_rng(label)
        paths = [sample_trajectory(rng, label, frames, height, width) for _ in range(n)]
        for key, (low, high) in ranges.items():
            for t in (0, 11, 23):
                values = np.sort([(p[key][t] - low) / (high - low) for p in paths])
                assert values.min() >= 0 and values.max() <= 1
                ks = np.abs(np.searchsorted(values, grid) / n - grid).max()
                assert ks < 0.06, (CLASS_NAMES[label], key, t, ks)


def _centroid_x(alpha: np.ndarray) -> np.ndarray:
    """Object centroid x per frame, as a circular mean (the object wraps around the frame edges)."""
    width = alpha.shape[-1]
    phase = 2 * np.pi * np.arange(width) / width
    column_mass = alpha.sum(axis=1)
    angle = np.arctan2(column_mass @ np.sin(phase), column_mass @ np.cos(phase))
    return (angle % (2 * np.pi)) * width / (2 * np.pi)


def test_single_frames_do_not_tell_the_class_but_frame_order_does():
    videos_per_class, frames = 48, 8
    per_video = {}
    for label in range(8):
        rng = np.random.default_rng([99, label])
        clips = [render_clip(rng, label, frames, 64, 80) for _ in range(videos_per_class)]
        images = np.stack([c[0] for c in clips]).astype(float)  # [N, F, H, W, 3]
        alphas = np.stack([c[1] for c in clips])                 # [N, F, H, W]
        centroid = np.stack([_centroid_x(a) for a in alphas])    # [N, F]
        per_video[label] = dict(brightness=images.mean(axis=(1, 2, 3, 4)), area=alphas.sum(axis=(2, 3)).mean(1),
                                right_half=(centroid >= 40).mean(1),
                                step=(np.diff(centroid, axis=1) + 40) % 80 - 40)  # wrapped x displacement
    # per-frame statistics: every class's mean within 4 standard errors of the overall mean
    for key in ("brightness", "area", "right_half"):
        values = np.stack([per_video[label][key] for label in range(8)])  # [classes, videos]
        standard_error = values.std() / np.sqrt(videos_per_class)
        deviation = np.abs(values.mean(axis=1) - values.mean()) / standard_error
        assert deviation.max() < 4, (key, deviation.round(2))
    # frame order separates right from left: the sign of the centroid's displacement
    assert (per_video[0]["step"] > 1).mean() > 0.95 and (per_video[1]["step"] < -1).mean() > 0.95
    for label in range(2, 8):
        assert np.abs(np.median(per_video[label]["step"])) < 1
