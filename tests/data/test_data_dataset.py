"""VideoDataset from cfg.data: sample layout, views, flips, repeated augmentation and determinism."""
import pytest
import torch

from side4video.data import TrainSampler, VideoDataset, collate_eval, collate_train, create_dataset, create_loader
from side4video.errors import ConfigError, DataError, InputNotFoundError
from tests.support import override, write_list


def frame_codes(frames: torch.Tensor) -> list[int]:
    """Source frame index of each frame of a view of coded frames (G = 10 * index, uniform per frame)."""
    return [int(round(float(f[1].float().mean()) / 10)) for f in frames]


def test_train_sample_layout(frames_data):
    ds = create_dataset(frames_data, "train", seed=1)
    assert isinstance(ds, VideoDataset) and len(ds) == 6
    assert ds.class_names == ["0", "1", "2"]
    assert ds.records[1].path == "v1" and ds.records[1].num_frames == 20 and ds.records[1].label == 1
    sample = ds[4]
    assert sample["frames"].shape == (1, 4, 3, 32, 32) and sample["frames"].dtype == torch.uint8
    assert sample["label"].tolist() == [1] and sample["label"].dtype == torch.int64
    assert sample["index"] == 4 and sample["video_id"] == "v4" and sample["valid"] and sample["errors"] == []


def test_val_is_one_centre_view_and_test_is_clip_major(frames_data):
    cfg = override(frames_data, test_crops=3, test_clips=2, sampling_protocol="tsn")
    val = create_dataset(cfg, "val")[0]
    assert val["frames"].shape == (1, 4, 3, 32, 32)
    # val: middle of each segment of 20 frames, T=4 -> 2, 7, 12, 17
    assert frame_codes(val["frames"][0]) == [2, 7, 12, 17]

    test = create_dataset(cfg, "test")[0]
    assert test["frames"].shape == (6, 4, 3, 32, 32) and test["label"].tolist() == [0] * 6
    clips = [[1, 6, 11, 16], [3, 8, 13, 18]]  # int(5k + 5 (c + 1) / 3)
    for view in range(6):
        clip, crop = divmod(view, 3)
        assert frame_codes(test["frames"][view]) == clips[clip]
    # the 3 crops differ in position (R = 4x, B = 4y), and repeat in the same order for each clip
    position = test["frames"][:, 0, [0, 2]]
    assert not torch.equal(position[0], position[1]) and not torch.equal(position[1], position[2])
    assert torch.equal(position[:3], position[3:])
    overridden = create_dataset(cfg, "test", test_crops=1, test_clips=3)[0]
    assert overridden["frames"].shape == (3, 4, 3, 32, 32)


@pytest.mark.parametrize("protocol, val, clips", [
    # F = 20, T = 4. kinetics: int(5 i); test shifts int(linspace(0, 4, 2)) = 0, 4
    ("kinetics", [0, 5, 10, 15], [[0, 5, 10, 15], [4, 9, 14, 19]]),
    # sth: seg 4.75, lefts int(round(4.75 i)) = 0, 5, 10 (9.5 -> 10), 14; val + int(2.375), test + int(1.58), int(3.17)
    ("sth", [2, 7, 12, 16], [[1, 6, 11, 15], [3, 8, 13, 17]]),
    ("auto", [0, 5, 10, 15], [[0, 5, 10, 15], [4, 9, 14, 19]]),  # dataset 'custom' -> kinetics
])
def test_reference_protocols_in_the_dataset(frames_data, protocol, val, clips):
    cfg = override(frames_data, test_clips=2, sampling_protocol=protocol)
    assert frame_codes(create_dataset(cfg, "val")[0]["frames"][0]) == val
    test = create_dataset(cfg, "test")[0]["frames"]
    assert [frame_codes(view) for view in test] == clips
    train = create_dataset(override(cfg, random_shift=False), "train")[0]["frames"][0]
    assert frame_codes(train) == val  # random_shift False: the validation rule


def test_dense_override(frames_data):
    cfg = override(frames_data, sampling_rate=3, sampling_protocol="tsn")
    sample = create_dataset(cfg, "val", dense=True)[0]
    # F=20, T=4, rate 3: window start (20 - 12) // 2 = 4
    assert frame_codes(sample["frames"][0]) == [4, 7, 10, 13]
    # reference protocols: stride dense_range // T; 12 // 4 = 3, the same middle window
    cfg = override(frames_data, dense_range=12, sampling_protocol="kinetics")
    assert frame_codes(create_dataset(cfg, "val", dense=True)[0]["frames"][0]) == [4, 7, 10, 13]
    # default range 128 > F: start 0, stride 32, wrapping mod 20
    cfg = override(frames_data, sampling="dense", sampling_protocol="sth")
    assert frame_codes(create_dataset(cfg, "val")[0]["frames"][0]) == [0, 12, 4, 16]
    assert frame_codes(create_dataset(cfg, "train")[0]["frames"][0]) == [0, 12, 4, 16]


def test_flip_swaps_paired_labels_only_and_mirrors_frames(tmp_path, frames_data):
    lines = ["v0 20 0", "v1 20 1", "v2 20 2"]
    list_file = write_list(tmp_path / "l.txt", lines)
    common = dict(train_list=list_file, train_crop="center", flip_pairs=[[0, 1]])
    flipping = create_dataset(override(frames_data, **common, flip=True), "train")
    plain = create_dataset(override(frames_data, **common, flip=False), "train")
    seen = set()
    for epoch in range(6):
        flipping.set_epoch(epoch)
        plain.set_epoch(epoch)
        for index, label in enumerate([0, 1, 2]):
            a, b = flipping[index], plain[index]
            flipped = not torch.equal(a["frames"], b["frames"])
            if flipped:
                assert torch.equal(a["frames"], b["frames"].flip(-1))
            expected = {0: 1, 1: 0, 2: 2}[label] if flipped else label
            assert a["label"].tolist() == [expected] and b["label"].tolist() == [label]
            seen.add((label, flipped))
    assert {(0, True), (1, True), (2, True), (0, False)} <= seen


def test_repeated_augmentation_views_share_frame_indices(frames_data):
    ds = create_dataset(override(frames_data, num_sample=3), "train", seed=4)
    sample = ds[2]
    views = sample["frames"]
    assert views.shape == (3, 4, 3, 32, 32) and sample["label"].shape == (3,)
    codes = [frame_codes(view) for view in views]
    assert codes[0] == codes[1] == codes[2]
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
    batch = collate_train([ds[0], ds[1]])
    assert batch["frames"].shape == (6, 4, 3, 32, 32) and batch["label"].shape == (6,)
    assert batch["index"].tolist() == [0, 1] and batch["num_samples"] == 2 and batch["errors"] == []


def test_randomness_is_a_function_of_seed_epoch_index(frames_data):
    cfg = override(frames_data, rand_aug=True, grayscale=0.3)
    first, second = create_dataset(cfg, "train", seed=7), create_dataset(cfg, "train", seed=7)
    assert torch.equal(first[3]["frames"], second[3]["frames"])
    first[0], first[5]  # other samples in between change nothing
    assert torch.equal(first[3]["frames"], second[3]["frames"])
    first.set_epoch(1)
    assert not torch.equal(first[3]["frames"], second[3]["frames"])
    second.set_epoch(1)
    assert torch.equal(first[3]["frames"], second[3]["frames"])
    other_seed = create_dataset(cfg, "train", seed=8)
    other_seed.set_epoch(1)
    assert not torch.equal(other_seed[3]["frames"], first[3]["frames"])


def _epoch_batches(loader, sampler, dataset, epoch):
    sampler.set_epoch(epoch)
    dataset.set_epoch(epoch)
    return [(batch["index"], batch["frames"], batch["label"]) for batch in loader]


def test_batches_do_not_depend_on_workers(frames_data):
    cfg = override(frames_data, rand_aug=True)
    results = []
    for workers in (0, 2):
        ds = create_dataset(cfg, "train", seed=3)
        sampler = TrainSampler(len(ds), seed=3)
        loader = create_loader(ds, batch_size=2, sampler=sampler, num_workers=workers,
                              persistent_workers=workers > 0)
        # epoch 1 reaches persistent workers started in epoch 0
        results.append([_epoch_batches(loader, sampler, ds, epoch) for epoch in (0, 1)])
    for epoch_0, epoch_w in zip(*results):
        assert len(epoch_0) == len(epoch_w) == 3
        for (i0, f0, l0), (iw, fw, lw) in zip(epoch_0, epoch_w):
            assert torch.equal(i0, iw) and torch.equal(f0, fw) and torch.equal(l0, lw)
    assert not torch.equal(results[0][0][0][1], results[0][1][0][1])


def test_eval_loader_batches(frames_data):
    ds = create_dataset(frames_data, "test", test_crops=5, test_clips=1)
    batch = next(iter(create_loader(ds, batch_size=4)))
    assert batch["frames"].shape == (4, 5, 4, 3, 32, 32)
    assert batch["label"].tolist() == [0, 1, 2, 0] and batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["video_id"] == ["v0", "v1", "v2", "v3"] and batch["valid"].tolist() == [True] * 4
    assert collate_eval([ds[5]])["frames"].shape == (1, 5, 4, 3, 32, 32)


def test_class_names_and_config_errors(tmp_path, frames_data):
    labels = write_list(tmp_path / "labels.csv", ["id,name", "0,a", "1,b", "2,c"])
    assert create_dataset(override(frames_data, label_list=labels), "val").class_names == \
        ["a", "b", "c"]
    with pytest.raises(DataError, match="names 3 classes but data.num_classes is 4"):
        create_dataset(override(frames_data, label_list=labels, num_classes=4), "val")
    with pytest.raises(ConfigError, match="data.rand_erase"):  # refused by the config, before any dataset
        override(frames_data, rand_erase=True)
    with pytest.raises(InputNotFoundError, match=r"data.train_root directory not found: .*missing_root"):
        create_dataset(override(frames_data, train_root=str(tmp_path / "missing_root")),
                      "train")
    with pytest.raises(InputNotFoundError, match="no_list.txt"):
        create_dataset(override(frames_data, val_list=str(tmp_path / "no_list.txt")), "val")
    with pytest.raises(InputNotFoundError, match="nolabels.csv"):
        create_dataset(override(frames_data, label_list=str(tmp_path / "nolabels.csv")), "val")
    with pytest.raises(DataError, match=r"data.flip_pairs: label 7 is outside \[0, 3\)"):
        create_dataset(override(frames_data, flip_pairs=[[0, 7]]), "train")
    with pytest.raises(DataError, match="data.flip_pairs: label 1 is listed twice"):
        create_dataset(override(frames_data, flip_pairs=[[0, 1], [1, 2]]), "train")
    with pytest.raises(ConfigError, match="data.train_list is not set"):
        create_dataset(override(frames_data, train_list=""), "train")
