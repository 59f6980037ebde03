"""The sparse toy dataset: reproducible files, list format, sparse informative frames, no single-frame shortcut."""
from __future__ import annotations

import os

import numpy as np
import pytest

from side4video.data.toy_sparse import (
    BLACK,
    CLASS_NAMES,
    INFORMATIVE,
    STATIC,
    generate_toy_sparse_dataset,
    informative_bursts,
    render_clip,
    schedule_stats,
)

SMALL = dict(train_per_class=2, val_per_class=1, min_frames=32, max_frames=40, height=32, width=40, workers=1)


def all_files(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_sparse")
    return out, generate_toy_sparse_dataset(str(out), seed=3, **SMALL)


@pytest.fixture(scope="module")
def rendered():
    """60 clips per class (in memory): frames, types, disc path, label."""
    clips = []
    for number in range(240):
        rng = np.random.default_rng([11, number])
        frames = int(rng.integers(32, 49))
        clips.append((*render_clip(rng, number % 4, frames), number % 4))
    return clips


def test_layout_and_list_format(toy):
    from side4video.data import read_annotation_list, read_label_names
    out, info = toy
    assert info["generated"] and info["num_classes"] == 4 and info["flip_pairs"] == [[0, 1]]
    assert read_label_names(info["label_list"]) == list(CLASS_NAMES)
    train = read_annotation_list(info["train_frames_list"], num_classes=4)
    val = read_annotation_list(info["val_frames_list"], num_classes=4)
    assert len(train) == 8 and len(val) == 4
    assert sorted(r.label for r in train) == [0, 0, 1, 1, 2, 2, 3, 3]
    for line, record in zip(open(info["train_frames_list"]).read().splitlines(), train):
        path, count, label = line.split()
        assert path == record.path and path.startswith("train/") and 32 <= int(count) <= 40
        files = sorted(os.listdir(os.path.join(info["frames_root"], path)))
        assert files == [f"{i:05d}.jpg" for i in range(1, int(count) + 1)]
    lengths = {r.num_frames for r in train + val}
    assert len(lengths) > 1  # clips differ in length
    types = np.load(os.path.join(info["frame_types"], "train.npz"))
    assert [len(types[f"{i:05d}"]) for i in range(1, 9)] == [r.num_frames for r in train]
    assert "flip_pairs: [[0, 1]]" in open(out / "README.txt").read()


def test_deterministic_by_seed_and_skipped_when_complete(toy, tmp_path):
    out, _ = toy
    again = generate_toy_sparse_dataset(str(tmp_path / "again"), seed=3, **{**SMALL, "workers": 2})
    assert again["generated"] and all_files(out) == all_files(tmp_path / "again")  # whatever the workers
    assert not generate_toy_sparse_dataset(str(out), seed=3, **SMALL)["generated"]
    other = generate_toy_sparse_dataset(str(tmp_path / "other"), seed=4, **SMALL)
    assert all_files(tmp_path / "other") != all_files(out) and other["generated"]


def test_only_the_direction_depends_on_the_class():
    outputs = [render_clip(np.random.default_rng(7), label, 40) for label in range(4)]
    frames, types, paths = zip(*outputs)
    assert all(np.array_equal(types[0], t) for t in types)
    still = types[0] != INFORMATIVE
    assert all(np.array_equal(frames[0][still], f[still]) for f in frames)        # distractors identical
    assert not np.array_equal(frames[0][~still], frames[1][~still])
    again = render_clip(np.random.default_rng(7), 2, 40)
    assert all(np.array_equal(a, b) for a, b in zip(again, outputs[2]))


def test_informative_frames_are_a_sparse_irregular_minority(rendered):
    types = [t for _, t, _, _ in rendered]
    stats = schedule_stats(types)
    assert 0.3 < stats["fractions"]["informative"] < 0.6    # fewer than the distractors: 3-5-frame bursts, 4-5 per clip
    assert all(stats["fractions"][name] > 0.1 for name in ("static", "background", "black"))
    for clip_types in types:
        informative = np.flatnonzero(clip_types == INFORMATIVE)
        assert 3 <= len(informative) <= 0.7 * len(clip_types)
        assert 1 <= len(informative_bursts(clip_types)) <= 5             # 4-5 bursts (neighbours may touch)
        assert informative[0] < len(clip_types) / 3 and informative[-1] >= 2 * len(clip_types) / 3  # span the clip
    positions = {tuple(np.flatnonzero(t == INFORMATIVE)) for t in types}
    assert len(positions) >= 0.95 * len(types)                                     # irregular placement
    # 8 frames at the segment middles (TSN validation) miss whole bursts: gaps in the drift they can follow
    assert stats["uniform_burst_miss"] > 0.1      # 17.1% of the bursts of the generated dataset
    # black frames are all black, static frames show the same image content at the square
    frames, clip_types = rendered[0][0], rendered[0][1]
    assert not frames[clip_types == BLACK].any()
    assert (clip_types == STATIC).any()


def test_single_frames_do_not_give_the_class_away(rendered):
    def pooled(frames):  # [F, H, W, 3] -> [F, 8 * 10] grey, 8x8 mean-pooled
        grey = frames.astype(np.float64).mean(-1)
        return grey.reshape(len(frames), 8, 8, 10, 8).mean((2, 4)).reshape(len(frames), -1)

    train, test = rendered[:160], rendered[160:]
    pooled_clips = [pooled(frames) for frames, _, _, _ in rendered]
    labels = np.array([label for _, _, _, label in rendered])

    def mean_frame_spread(assigned):  # how far the per-class mean frames lie from the overall mean frame
        means = np.stack([np.concatenate([p for p, y in zip(pooled_clips, assigned) if y == c]).mean(0)
                          for c in range(4)])
        return np.abs(means - np.concatenate(pooled_clips).mean(0)).mean()

    shuffled = np.mean([mean_frame_spread(np.random.default_rng(s).permutation(labels)) for s in range(5)])
    assert mean_frame_spread(labels) < 1.5 * shuffled   # the mean frame is class-independent, as for random labels
    means = np.stack([np.concatenate([pooled(f) for f, _, _, y in train if y == c]).mean(0) for c in range(4)])
    correct = total = 0
    for frames, types, _, label in test:
        informative = pooled(frames[types == INFORMATIVE])
        guess = np.argmin(((informative[:, None] - means[None]) ** 2).sum(-1), axis=1)
        correct += int((guess == label).sum())
        total += len(guess)
    assert correct / total < 0.4                                         # single frames: about chance (0.25)
    # the disc's position in one frame is uniform whatever the class
    xs = {c: np.concatenate([p[t == INFORMATIVE, 0] for _, t, p, y in rendered if y == c]) for c in range(4)}
    assert all(abs(xs[c].mean() - 40) < 6 for c in range(4))
    # ... while the order of two informative frames up to 14 frames apart tells it (shortest displacement on the
    # torus: at most 2.2 px per frame, so less than half the frame's height)
    for _, types, path, label in rendered:
        informative = np.flatnonzero(types == INFORMATIVE)
        for a, b in zip(informative[:-1], informative[1:]):
            if b - a > 14:
                continue
            move = (path[b] - path[a] + np.array([40, 32])) % np.array([80, 64]) - np.array([40, 32])
            axis = 0 if label < 2 else 1
            assert np.sign(move[axis]) == (-1 if label % 2 == 0 else 1) and abs(move[1 - axis]) < 1e-9


def test_only_the_lists_of_the_written_formats_are_returned(tmp_path):
    """A videos-only dataset names no frame lists (they would point at folders that were not written)."""
    info = generate_toy_sparse_dataset(str(tmp_path / "videos"), seed=3, **{**SMALL, "formats": ("videos",)})
    assert "train_frames_list" not in info and "frames_root" not in info
    lists = [info[k] for k in ("train_videos_list", "val_videos_list", "label_list")]
    assert all(os.path.isfile(path) for path in lists) and not (tmp_path / "videos" / "frames").exists()
    first = open(info["val_videos_list"]).readline().split()
    assert first[0] == "val/00001.mp4" and int(first[1]) in range(len(CLASS_NAMES))
