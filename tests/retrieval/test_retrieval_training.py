"""Retrieval end to end through train.py and test.py on the toy (MSR-VTT layout): the engine's step, the task seam,
validation written like recognition's, test.py equal to the logged validation, and a run killed mid-epoch that
resumes to the same losses, metrics and weights as an uninterrupted one."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from side4video.config import ConfigError, load_config
from side4video.engine.checkpoint import load_checkpoint
from side4video.engine.logging_utils import read_jsonl
from tests.support import run_script, write_toy_retrieval_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def retrieval_config(tmp_path_factory):
    """The toy config on a small toy (32 training videos, 96 captions; 64 test videos), 4 frames, 2 epochs of
    6 steps."""
    config, _ = write_toy_retrieval_config(tmp_path_factory.mktemp("toy_retrieval"), train_videos=32, epochs=2)
    return config


def _train(config, out_dir, *extra, kill_at: int | None = None):
    args = ["--config", str(config), "--output", str(out_dir), *extra]
    if kill_at is None:
        return run_script(["train.py", *args])
    return run_script(["-m", "tests.fault_injection", "train", "--kill-at-step", str(kill_at), "--", *args])


def test_the_config_refuses_a_retrieval_dataset_without_its_files(retrieval_config):
    with pytest.raises(ConfigError, match="needs data.features_path"):
        load_config(None, ["task={type: retrieval}", "data.dataset=msvd", "data.data_path=x"])
    with pytest.raises(ConfigError, match="retrieval reads data.dataset msrvtt, msvd"):
        load_config(retrieval_config, ["data.dataset=kinetics"])


def test_training_validates_tests_and_resumes_exactly(retrieval_config, tmp_path):
    full = tmp_path / "full"
    result = _train(retrieval_config, full)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [r for r in read_jsonl(full / "metrics.jsonl") if "val_t2v_R1" in r]
    assert len(rows) == 2 and all(0 <= r["val_t2v_R1"] <= 100 for r in rows)
    sims = np.load(full / "val_sims.npz")
    assert sims["sim"].shape == (64, 64) and len(sims["video_ids"]) == 64
    assert json.loads((full / "val_retrieval.json").read_text())["multi_caption"] is False

    # test.py on the last checkpoint reproduces the last validation exactly
    tested = run_script(["test.py", "--config", str(retrieval_config), "--weights",
                         str(full / "checkpoints" / "last.pt"), "--output", str(tmp_path / "test")])
    assert tested.returncode == 0, tested.stderr[-3000:]
    results = json.loads((tmp_path / "test" / "results.json").read_text())
    assert results["task"] == "retrieval" and results["num_videos"] == 64
    for key in ("t2v_R1", "t2v_R5", "t2v_MdR", "v2t_R1", "v2t_MnR"):
        assert results[key] == rows[-1][f"val_{key}"], key
    np.testing.assert_array_equal(np.load(tmp_path / "test" / "sims.npz")["sim"], sims["sim"])

    # killed during epoch 1 (after step 8, the last checkpoint at the end of epoch 0), then resumed
    resumed = tmp_path / "resumed"
    killed = _train(retrieval_config, resumed, "--opts", "logging.save_freq_steps=0", kill_at=8)
    assert killed.returncode != 0
    again = _train(retrieval_config, resumed)
    assert again.returncode == 0, again.stderr[-3000:]
    losses = {r["global_step"]: r["loss"] for r in read_jsonl(full / "steps.jsonl")}
    resumed_losses = {r["global_step"]: r["loss"] for r in read_jsonl(resumed / "steps.jsonl")}
    assert resumed_losses == losses
    assert [r for r in read_jsonl(resumed / "metrics.jsonl") if "val_t2v_R1" in r][-1]["val_t2v_R1"] == \
        rows[-1]["val_t2v_R1"]
    a = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {k.split(".")[0] for k in a} == {"side", "wti", "logit_scale"}
