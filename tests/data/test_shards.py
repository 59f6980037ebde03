"""WebDataset shards: writing them (``side4video prep shards``: counts, keys, manifest, resume, skipped entries) and
reading them (``data.format: webdataset``: brace expansion, the split over ranks and workers, the same clips as the
file path, unreadable samples, missing shards), and a short training run from shards."""
from __future__ import annotations

import json
import os
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from side4video.data import ShardDataset, create_dataset, create_loader
from side4video.data.shards import expand_urls, require_webdataset, resolve_shards, round_robin_skips, worker_runs
from side4video.errors import ConfigError, DataError, InputNotFoundError
from side4video.prep import shards as prep_shards
from side4video.prep.cli import main as prep_main
from side4video.prep.shards import write_shards
from tests.support import PNG_TMPL, override, write_list

PATTERN = "shard-{{000000..{last:06d}}}.tar"


def _write(data_cfg, out: Path, shard_size: int, list_file: str | None = None, **options) -> prep_shards.ShardSummary:
    return write_shards(list_file=list_file or data_cfg.train_list, root=data_cfg.train_root, out=str(out),
                        shard_size=shard_size, tmpl=data_cfg.image_tmpl, **options)


def _shard_cfg(data_cfg, out: Path, shards: int, **changes):
    """``data_cfg`` reading the shards in ``out`` (train and val) instead of files."""
    urls = str(out / PATTERN.format(last=shards - 1))
    return override(data_cfg, format="webdataset", train_list=urls, val_list=urls, **changes)


def _members(shard: Path) -> list[str]:
    with tarfile.open(shard) as archive:
        return archive.getnames()


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.tar"))}


@pytest.fixture(scope="module")
def long_frames(frames_data, tmp_path_factory):
    """13 entries (the 6 frame folders, repeated) in shards of 3: 3, 3, 3, 3, 1 samples."""
    folder = tmp_path_factory.mktemp("long")
    list_file = write_list(folder / "list.txt", [f"v{i % 6} 20 {i % 3}" for i in range(13)])
    cfg = override(frames_data, train_list=list_file, val_list=list_file)
    _write(cfg, folder / "shards", 3)
    return _shard_cfg(cfg, folder / "shards", 5)


# -- writing -------------------------------------------------------------------------------------------------------
def test_shards_hold_every_readable_entry_with_its_label_and_a_manifest(frames_data, tmp_path, capsys):
    list_file = write_list(tmp_path / "list.txt", [f"v{i} 20 {i % 3}" for i in range(6)] + ["gone 20 1"])
    summary = _write(frames_data, tmp_path / "out", 4, list_file=list_file)
    assert (summary.shards, summary.samples, summary.skipped, summary.written) == (2, 6, 1, 2)
    assert "skipped gone (line 7): frame folder not found" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "out" / "index.json").read_text())
    assert manifest["complete"] and manifest["num_samples"] == 6 and manifest["kind"] == "frames"
    assert [(s["name"], s["samples"]) for s in manifest["shards"]] == [("shard-000000.tar", 4), ("shard-000001.tar", 2)]
    assert manifest["source"]["list"] == os.path.abspath(list_file) and manifest["source"]["shard_size"] == 4
    assert manifest["skipped"] == [{"position": 6, "line": 7, "video_id": "gone", "reason": "frame folder not found"}]
    names = _members(tmp_path / "out" / "shard-000000.tar")
    assert names[:3] == ["00000000_v0.cls", "00000000_v0.frame00001.png", "00000000_v0.frame00002.png"]
    assert len(names) == 4 * (20 + 2) and "00000003_v3.json" in names
    with tarfile.open(tmp_path / "out" / "shard-000001.tar") as archive:
        meta = json.loads(archive.extractfile("00000005_v5.json").read())
        assert archive.extractfile("00000005_v5.cls").read() == b"2"
        assert archive.extractfile("00000005_v5.frame00020.png").read() == \
            (Path(frames_data.train_root) / "v5" / PNG_TMPL.format(20)).read_bytes()
    assert meta == {"video_id": "v5", "index": 5, "line": 6, "label": 2, "num_frames": 20}


def test_videos_are_stored_as_they_are_with_captions(videos_data, tmp_path):
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"clip 1.mp4": "a moving square"}))
    _write(videos_data, tmp_path / "out", 10, captions=str(captions))
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as archive:
        assert archive.extractfile("00000001_clip_1_mp4.mp4").read() == \
            (Path(videos_data.train_root) / "clip 1.mp4").read_bytes()
        assert archive.extractfile("00000001_clip_1_mp4.txt").read() == b"a moving square"
        assert "00000000_clip_0_mp4.txt" not in archive.getnames()


def test_an_interrupted_write_resumes_and_a_complete_one_is_left_alone(frames_data, tmp_path, monkeypatch):
    _write(frames_data, tmp_path / "reference", 2)
    reference = _shard_bytes(tmp_path / "reference")
    assert list(reference) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]

    out = tmp_path / "out"
    load = prep_shards.load_sample
    def interrupted(record, index, *args, **kwargs):    # Ctrl-C while the second shard is being written
        if index == 3:
            raise KeyboardInterrupt
        return load(record, index, *args, **kwargs)
    monkeypatch.setattr(prep_shards, "load_sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _write(frames_data, out, 2)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard-000000.tar"]    # no half shard
    assert not json.loads((out / "index.json").read_text())["complete"]
    with pytest.raises(DataError, match="incomplete"):
        resolve_shards(str(out / "shard-000000.tar"))
    monkeypatch.setattr(prep_shards, "load_sample", load)
    assert _write(frames_data, out, 2).written == 2
    assert _shard_bytes(out) == reference

    # a killed run: the last shard missing and its temporary file left behind by a process that is gone
    (out / "shard-000002.tar").unlink()
    (out / ".shard-000002.tar.tmp999999999").write_bytes(b"half a shard")
    assert _write(frames_data, out, 2).written == 1
    assert _shard_bytes(out) == reference and not list(out.glob(".*tmp*"))

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert _write(frames_data, out, 2).written == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    with pytest.raises(DataError, match="another list or other settings .*shard_size"):
        _write(frames_data, out, 3)


def test_the_command_line(frames_data, tmp_path, capsys):
    out = tmp_path / "out"
    code = prep_main(["shards", frames_data.train_list, "--root", frames_data.train_root, "--out", str(out),
                      "--shard_size", "5", "--tmpl", PNG_TMPL])
    assert code == 0 and "wrote 2 shards" in capsys.readouterr().out
    assert prep_main(["shards", "missing.txt", "--root", str(tmp_path), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: annotation list not found: missing.txt"


# -- naming and finding shards -------------------------------------------------------------------------------------
def test_brace_patterns_and_missing_shards_or_extra(long_frames, tmp_path, monkeypatch):
    folder = Path(long_frames.train_list).parent
    urls = expand_urls(long_frames.train_list)
    assert [Path(u).name for u in urls] == [f"shard-{i:06d}.tar" for i in range(5)]
    assert expand_urls(f"{folder}/shard-000000.tar::{folder}/shard-{{000003,000004}}.tar") == \
        [f"{folder}/shard-000000.tar", f"{folder}/shard-000003.tar", f"{folder}/shard-000004.tar"]
    assert [s.samples for s in resolve_shards(long_frames.train_list)] == [3, 3, 3, 3, 1]
    assert len(create_dataset(override(long_frames, train_list=f"{folder}/shard-{{000001..000002}}.tar"),
                              "train")) == 6

    with pytest.raises(InputNotFoundError) as error:
        create_dataset(override(long_frames, val_list=f"{folder}/shard-{{000000..000006}}.tar"), "val")
    assert str(error.value) == f"data.val_list: shard not found: {folder}/shard-000005.tar"
    elsewhere = tmp_path / "shard-000000.tar"
    elsewhere.write_bytes((folder / "shard-000000.tar").read_bytes())
    with pytest.raises(InputNotFoundError, match="shard manifest not found"):
        resolve_shards(str(elsewhere))

    monkeypatch.setitem(sys.modules, "webdataset", None)      # as if the extra were not installed
    with pytest.raises(ConfigError) as error:
        require_webdataset()
    assert "\n" not in str(error.value) and "pip install 'side4video[shards]'" in str(error.value)


def test_the_format_is_a_validated_choice(frames_data):
    with pytest.raises(ConfigError, match="data.format"):
        override(frames_data, format="tfrecord")
    assert frames_data.format == "files" and isinstance(create_dataset(frames_data, "train"), torch.utils.data.Dataset)


# -- the epoch: split, order, resume -------------------------------------------------------------------------------
def test_plan_helpers():
    assert worker_runs(6, 2, 2, drop_last=True) == [(0, 4), (4, 6)]
    assert worker_runs(7, 2, 2, drop_last=True) == [(0, 4), (4, 6)]             # the incomplete batch dropped
    assert worker_runs(7, 2, 2, drop_last=False) == [(0, 4), (4, 7)]
    assert worker_runs(2, 2, 3, drop_last=True) == [(0, 2), (2, 2), (2, 2)]
    assert round_robin_skips([3, 2], 3) == [2, 1] and round_robin_skips([1, 3], 3) == [1, 2]


def _epoch(dataset: ShardDataset, rank: int, epoch: int, workers: int, start: int = 0) -> list[list[int]]:
    dataset.set_distributed(rank, 2)
    dataset.set_epoch(epoch)
    dataset.set_start(start)
    loader = create_loader(dataset, 2, num_workers=workers, drop_last=dataset.training)
    return [batch["index"].tolist() for batch in loader]


def test_each_sample_at_most_once_per_epoch_over_2_ranks_and_2_workers(long_frames):
    train = create_dataset(long_frames, "train")
    assert len(train) == 13 and train.batches_per_rank() == 0        # batch size 16 until a loader says 2
    for epoch in (0, 1):
        batches = {rank: _epoch(train, rank, epoch, workers=2) for rank in (0, 1)}
        # 13 samples, 2 ranks: 6 each (1 dropped), 3 whole batches of 2 per rank, on both ranks
        assert [len(b) for b in batches.values()] == [3, 3] == [train.batches_per_rank()] * 2
        served = [i for rank in batches.values() for batch in rank for i in batch]
        assert len(served) == 12 and len(set(served)) == 12 and set(served) <= set(range(13))
    assert batches != {rank: _epoch(train, rank, 0, workers=2) for rank in (0, 1)}    # another order each epoch

    val = create_dataset(long_frames, "val")
    batches = {rank: _epoch(val, rank, 0, workers=2) for rank in (0, 1)}
    served = [i for rank in batches.values() for batch in rank for i in batch]
    assert sorted(served) == list(range(13)) and len(served) == 13                 # every sample once
    assert batches[0] == [[0, 1], [4, 5], [2, 3]]                                 # workers' runs, each in order


def test_a_resume_continues_the_epoch_and_clips_do_not_depend_on_workers(long_frames):
    train = create_dataset(long_frames, "train")
    full = _epoch(train, 1, 1, workers=2)
    assert _epoch(train, 1, 1, workers=2, start=2 * 2) == full[2:]
    train.set_distributed(0, 1)
    train.set_epoch(1)
    by_workers = {}
    for workers in (0, 2):
        loader = create_loader(train, 2, num_workers=workers, drop_last=True)
        by_workers[workers] = {i: f for batch in loader for i, f in zip(batch["index"].tolist(), batch["frames"])}
    assert by_workers[0].keys() == by_workers[2].keys()
    assert all(torch.equal(by_workers[0][i], by_workers[2][i]) for i in by_workers[0])


# -- the same clips as from files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["frames_data", "videos_data"])
def test_shards_give_the_file_paths_clips(source, request, tmp_path):
    data_cfg = override(request.getfixturevalue(source), test_clips=2, test_crops=3)
    _write(data_cfg, tmp_path / "out", 3)
    shard_cfg = _shard_cfg(data_cfg, tmp_path / "out", 2)
    files, stream = create_dataset(data_cfg, "test"), create_dataset(shard_cfg, "test")
    items = list(stream)
    assert [item["index"] for item in items] == list(range(len(files)))
    for item in items:
        reference = files[item["index"]]
        assert item["valid"] and item["video_id"] == reference["video_id"]
        assert torch.equal(item["frames"], reference["frames"]) and torch.equal(item["label"], reference["label"])
    if source == "frames_data":          # training: the same (seed, epoch, index) draws
        files, stream = create_dataset(data_cfg, "train", seed=3), create_dataset(shard_cfg, "train", seed=3)
        files.set_epoch(2)
        stream.set_epoch(2)
        for item in stream:
            reference = files[item["index"]]
            assert torch.equal(item["frames"], reference["frames"]) and torch.equal(item["label"], reference["label"])


def test_unreadable_samples_are_replaced_in_training_and_invalid_in_evaluation(videos_data, tmp_path):
    _write(videos_data, tmp_path / "out", 10)
    shard = tmp_path / "out" / "shard-000000.tar"
    with tarfile.open(shard) as archive:
        members = [(info, archive.extractfile(info).read()) for info in archive.getmembers()]
    with tarfile.open(shard, "w") as archive:          # sample 2's video is garbage now
        for info, data in members:
            if info.name == "00000002_clip_2_mp4.mp4":
                data, info.size = b"not a video", len(b"not a video")
            archive.addfile(info, __import__("io").BytesIO(data))
    manifest = json.loads((tmp_path / "out" / "index.json").read_text())
    manifest["shards"][0]["bytes"] = shard.stat().st_size
    (tmp_path / "out" / "index.json").write_text(json.dumps(manifest))
    cfg = _shard_cfg(videos_data, tmp_path / "out", 1, batch_size=1)

    val = {item["index"]: item for item in create_dataset(cfg, "val")}
    assert [val[i]["valid"] for i in range(4)] == [True, True, False, True]
    assert val[2]["errors"][0][0] == "clip 2.mp4 (in shard-000000.tar)"
    train = {item["index"]: item for item in create_dataset(cfg, "train")}
    assert all(item["valid"] for item in train.values()) and train[2]["video_id"] != "clip 2.mp4"
    assert [path for path, _ in train[2]["errors"]] == ["clip 2.mp4 (in shard-000000.tar)"]
    assert "/side4video-" not in train[2]["errors"][0][1]       # not the temporary file's name

    shard.write_bytes(shard.read_bytes()[:3000])        # cut off: fewer samples than the manifest says
    with pytest.raises(DataError, match="shard .*shard-000000.tar"):
        list(create_dataset(cfg, "val"))


# -- training from shards ------------------------------------------------------------------------------------------
def test_a_short_training_run_from_shards_validates_as_from_files(toy_data, tmp_path):
    """One epoch (4 steps) of the toy config from shards; then the trained model scores the validation videos from
    shards and from files identically (the same clips), and as the run's own validation did."""
    from side4video.config import load_config
    from side4video.engine.trainer import Trainer
    from tests.support import write_toy_config
    for split in ("train", "val"):
        write_shards(list_file=str(toy_data / f"{split}_frames.txt"), root=str(toy_data / "frames"),
                     out=str(tmp_path / split), shard_size=10, tmpl="{:05d}.jpg")
    shards = {"train": str(tmp_path / "train" / "shard-{000000..000003}.tar"),       # 32 videos: 10, 10, 10, 2
              "val": str(tmp_path / "val" / "shard-{000000..000001}.tar")}           # 16 videos: 10, 6
    config = write_toy_config(tmp_path / "cfg.yaml", toy_data, **{"data.format": "webdataset",
                                                                  "data.train_list": shards["train"],
                                                                  "data.val_list": shards["val"],
                                                                  "solver.epochs": 1})
    cfg = load_config(str(config))
    trainer = Trainer(cfg, tmp_path / "run")
    summary = trainer.fit()
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 32 // 8 and all(step["loss"] == step["loss"] for step in steps)
    assert summary["epoch"] == 0 and 0 <= summary["val_top1"] <= 100

    scores = {}
    for data_format, val_list in (("files", str(toy_data / "val_frames.txt")), ("webdataset", shards["val"])):
        data = override(cfg.data, format=data_format, val_list=val_list)
        loader = create_loader(create_dataset(data, "val", seed=cfg.seed), 8)
        evaluation = trainer.task.evaluate(trainer.backbone, trainer.validation_model(), loader,
                                           device=trainer.dist.device, mean=cfg.data.mean, std=cfg.data.std,
                                           assembler=trainer.assembler)
        scores[data_format] = evaluation
    files, stream = (scores[name].details["scores"] for name in ("files", "webdataset"))
    assert list(files.video_ids) == list(stream.video_ids) and len(files.labels) == 16
    assert torch.allclose(torch.as_tensor(files.scores), torch.as_tensor(stream.scores), atol=1e-6)
    assert scores["files"].metrics["top1"] == scores["webdataset"].metrics["top1"] == summary["val_top1"]
