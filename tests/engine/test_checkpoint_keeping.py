"""Checkpoints that are never lost: a failed write keeps the last good one, a start finds what a killed write left,
the resume policy over every key group, and the position re-based on another global batch."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from side4video import files
from side4video.config import load_config, to_plain_dict
from side4video.engine.checkpoint import load_checkpoint
from side4video.engine.resume import REFUSED_GROUPS, SCHEDULE_KEYS, compare, rebase_position
from side4video.engine.state import CheckpointKeeper, TrainState
from side4video.files import DiskFullError
from tests.fault_injection import FullDisk


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((4,), value)}, **TrainState(epoch=int(value)).position()}


def _value(path) -> float:
    return float(load_checkpoint(path)["model"]["w"][0])


@pytest.fixture
def keeper(tmp_path) -> CheckpointKeeper:
    keeper = CheckpointKeeper(tmp_path / "checkpoints")
    keeper.save_last(_state(1.0), global_step=1)
    keeper.confirm()
    return keeper


def test_a_write_that_runs_out_of_disk_keeps_the_last_good_checkpoint(keeper, monkeypatch):
    monkeypatch.setattr(files, "_open_temporary", FullDisk)
    with pytest.raises(DiskFullError) as info:
        keeper.save_last(_state(2.0), global_step=2)
    message = str(info.value)
    assert "\n" not in message and str(keeper.folder) in message and "free" in message and "needed" in message
    assert _value(keeper.last) == 1.0
    assert sorted(p.name for p in keeper.folder.iterdir()) == ["last.pt"], "nothing half-written is left"


@pytest.mark.parametrize("failing", ["os.link", "os.replace"])
def test_a_failure_at_any_later_point_of_the_write_keeps_a_complete_last_pt(keeper, monkeypatch, failing):
    """After the new file is complete: setting the old one aside (a hard link) or renaming the new one over it."""
    real = getattr(os, failing.split(".")[1])
    calls = []

    def failing_call(source, target, *args, **kwargs):
        calls.append(target)
        if failing == "os.link" or str(target).endswith("last.pt"):
            raise OSError(errno.EIO, "I/O error", str(target))
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(os, failing.split(".")[1], failing_call)
    if failing == "os.link":   # no hard links here: the previous checkpoint is copied aside instead
        keeper.save_last(_state(2.0), global_step=2)
        assert _value(keeper.last) == 2.0 and _value(keeper.previous) == 1.0
        return
    with pytest.raises(OSError):
        keeper.save_last(_state(2.0), global_step=2)
    assert _value(keeper.last) == 1.0 and calls


def test_the_previous_checkpoint_stays_until_confirmed_and_rolls_back(keeper):
    keeper.save_last(_state(2.0), global_step=2)
    assert _value(keeper.last) == 2.0 and _value(keeper.previous) == 1.0
    keeper.roll_back()
    assert _value(keeper.last) == 1.0 and not keeper.previous.exists()
    keeper.save_last(_state(3.0), global_step=3)
    keeper.confirm()
    assert _value(keeper.last) == 3.0 and not keeper.previous.exists()


def test_a_start_that_finds_only_the_previous_checkpoint_resumes_from_it(keeper):
    os.replace(keeper.last, keeper.previous)          # what a write killed in the older order left behind
    path, note = keeper.resumable()
    assert path == keeper.previous and "resuming from it" in note
    keeper.previous.unlink()
    assert keeper.resumable() == (None, None)


# -- the resume policy -------------------------------------------------------------------------------------------
BASE = {"data.num_classes": 4, "data.train_list": "train.txt", "data.val_list": "val.txt"}
CHANGES = {
    "model": {"network.side_dim": 48, "network.temporal_module": "tsm", "network.drop_path": 0.1},
    "frames": {"data.num_segments": 16, "data.seg_length": 2, "data.sampling": "dense"},
    "input size": {"data.input_size": 256, "data.scale_size": 288},
    "task": {"task": {"type": "classification", "num_classes": 4}},
    "plugins": {"solver.plugins": [{"type": "ema"}], "solver.mixup": 0.8},
    "data": {"data.train_list": "other.txt", "data.val_root": "/elsewhere", "data.num_classes": 5},
}


def _compare(changes: dict, world_size: int = 1, sha: str = "aaa"):
    saved = to_plain_dict(load_config(None, BASE))
    now = to_plain_dict(load_config(None, {**BASE, **changes}))
    return compare(saved, now, saved_backbone={"sha256": "aaa"}, backbone={"sha256": sha}, saved_world_size=1,
                   world_size=world_size)


@pytest.mark.parametrize("group", list(CHANGES))
def test_changes_that_alter_the_model_or_a_step_are_refused_for_every_group(group):
    assert set(REFUSED_GROUPS) == set(CHANGES), "a new group needs cases here"
    for key, value in CHANGES[group].items():
        changes = _compare({key: value})
        assert list(changes.refused) == [key], (group, key, changes)


def test_another_backbone_file_is_refused_by_its_contents_not_its_path():
    assert list(_compare({}, sha="bbb").refused) == ["network.pretrained (SHA-256)"]
    same_weights_elsewhere = _compare({"network.pretrained": "/moved/ViT-B-16.pt"})
    assert not same_weights_elsewhere.refused


def test_schedule_changes_continue_with_every_one_named():
    changes = _compare({"solver.lr": 0.01, "solver.epochs": 60, "data.batch_size": 32}, world_size=2)
    assert list(changes.schedule) == ["solver.lr", "solver.epochs", "data.batch_size", "processes"]
    assert not changes.refused
    assert set(SCHEDULE_KEYS) >= {"solver.lr", "solver.epochs", "data.batch_size"}
    quiet = _compare({"logging.print_freq": 5, "data.workers": 0, "network.recompute": False})
    assert not quiet.refused and not quiet.schedule and set(quiet.other) == {"logging.print_freq", "data.workers",
                                                                            "network.recompute"}


def test_the_position_is_rebased_in_samples_on_another_global_batch():
    # batch 8 x 1 process, killed after 3 of 4 micro-batches of epoch 2: 24 of 32 videos seen
    doubled = rebase_position(epoch=2, step_in_epoch=3, old_global_batch=8, new_global_batch=16, old_accumulation=1,
                              new_accumulation=1, new_batches_per_epoch=2, videos_per_epoch=32)
    assert (doubled.skip_batches, doubled.optimizer_step) == (1, 2 * 2 + 1)
    assert "sample 16 of 32" in doubled.note and "8 are seen again" in doubled.note
    halved = rebase_position(epoch=2, step_in_epoch=3, old_global_batch=8, new_global_batch=4, old_accumulation=1,
                             new_accumulation=2, new_batches_per_epoch=8, videos_per_epoch=32)
    assert (halved.skip_batches, halved.optimizer_step) == (6, 2 * 4 + 3)   # 24 videos = 6 batches = 3 steps
