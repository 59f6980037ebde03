"""Retrieval trained by 2 processes (torchrun, gloo on the CPU) against 1 process with the same global batch.

What must hold (see ``side4video/retrieval/loss.py``): every process gathers the whole global batch, so the first
step's loss is the 1-process loss of the same captions and clips; each process back-propagates into its own
embeddings only, so after DeepSpeed's gradient mean the embedding path (the side network) gets 1/2 of the 1-process
gradient, while the parameters every process applies to the whole gathered batch (the WTI similarity head, the
logit scale) get the exact one — the reference's convention; with ``task.gather_gradient: summed`` every update
equals the 1-process one. One plain SGD step (no weight decay, no warm-up)
makes that visible as update sizes. The 2-process validation equals test.py's 1-process scoring of the same
checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from side4video.config import load_config
from side4video.engine.builders import backbone_from_config, model_from_config
from side4video.engine.checkpoint import load_checkpoint
from side4video.engine.distributed import free_port
from side4video.engine.logging_utils import read_jsonl
from tests.support import run_script, write_toy_retrieval_config

pytestmark = pytest.mark.slow

BATCH = 4           # per process with 2 processes; the 1-process run takes 2 x BATCH
# 3 training videos x 3 captions = 9 items: one optimizer step of 8 per epoch, whichever way the batch is split
COMMON = {"solver.optim": "sgd", "solver.lr": 1.0, "solver.weight_decay": 0.0, "solver.lr_warmup_step": 0,
          "network.sync_bn": True}


def _losses(run) -> dict[int, float]:
    return {row["global_step"]: row["loss"] for row in read_jsonl(run / "steps.jsonl")}


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    root = tmp_path / "toy"
    one_cfg, _ = write_toy_retrieval_config(root, train_videos=3, epochs=1, name="one.yaml",
                                            **{"data.batch_size": 2 * BATCH}, **COMMON)
    two_cfg, _ = write_toy_retrieval_config(root, train_videos=3, epochs=1, name="two.yaml",
                                            **{"data.batch_size": BATCH}, **COMMON)
    one = run_script(["train.py", "--config", str(one_cfg), "--output", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_script(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                      "train.py", "--config", str(two_cfg), "--output", str(tmp_path / "two")])
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert "2 process(es)" in two.stdout

    # it finished and wrote what a retrieval run writes (rank 0 only, once)
    out = tmp_path / "two"
    rows = read_jsonl(out / "metrics.jsonl")
    assert len(rows) == 1 and 0 <= rows[0]["val_t2v_R1"] <= 100
    assert np.load(out / "val_sims.npz")["sim"].shape == (64, 64)
    assert json.loads((out / "val_retrieval.json").read_text())["multi_caption"] is False
    assert json.loads((out / "summary.json").read_text())["monitor"] == "t2v_R1"
    # the 2-process validation (each process its shard of the videos, gathered) is test.py's 1-process one
    tested = run_script(["test.py", "--config", str(two_cfg), "--weights", str(out / "checkpoints" / "last.pt"),
                         "--output", str(tmp_path / "test")])
    assert tested.returncode == 0, tested.stderr[-3000:]
    results = json.loads((tmp_path / "test" / "results.json").read_text())
    assert results["task"] == "retrieval"
    for key in ("t2v_R1", "t2v_R5", "t2v_MdR", "v2t_R1", "v2t_MnR"):
        assert results[key] == rows[0][f"val_{key}"], key
    np.testing.assert_array_equal(np.load(tmp_path / "test" / "sims.npz")["sim"], np.load(out / "val_sims.npz")["sim"])

    # the first step's loss: the same global batch, the same contrastive loss over all of it
    a, b = _losses(tmp_path / "one"), _losses(out)
    assert a.keys() == b.keys() == {1}
    assert b[1] == pytest.approx(a[1], rel=1e-6)

    # the one SGD step: the updates (from the seeded initial weights, which the trainer builds the same way)
    cfg = load_config(one_cfg)
    initial = model_from_config(cfg, backbone_from_config(cfg), seed=cfg.seed).state_dict()
    w1 = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model"]
    _check_updates(initial, w1, load_checkpoint(out / "checkpoints" / "last.pt")["model"], side_fraction=0.5)

    # task.gather_gradient: summed: every rank's gradient for each embedding summed, so the same update as 1 process
    summed_cfg, _ = write_toy_retrieval_config(root, train_videos=3, epochs=1, name="summed.yaml",
                                               **{"data.batch_size": BATCH, "task.gather_gradient": "summed"},
                                               **COMMON)
    summed = run_script(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                         "train.py", "--config", str(summed_cfg), "--output", str(tmp_path / "summed")])
    assert summed.returncode == 0, summed.stdout[-3000:] + summed.stderr[-3000:]
    assert _losses(tmp_path / "summed")[1] == pytest.approx(a[1], rel=1e-6)
    _check_updates(initial, w1, load_checkpoint(tmp_path / "summed" / "checkpoints" / "last.pt")["model"],
                   side_fraction=1.0)


def _check_updates(initial: dict, w1: dict, w2: dict, side_fraction: float) -> None:
    """The 2-process update ``w2 - initial`` is ``side_fraction`` of the 1-process one for the side network and
    equal to it for every other trained parameter."""
    assert w1.keys() == w2.keys() == initial.keys()
    moved = []
    for key, start in initial.items():
        if not start.is_floating_point():
            continue
        if "running_" in key:   # network.sync_bn: BatchNorm statistics of the global batch, not updates
            torch.testing.assert_close(w2[key].float(), w1[key].float(), rtol=1e-4, atol=1e-6, msg=key)
            continue
        d1, d2 = w1[key].float() - start.float(), w2[key].float() - start.float()
        # untouched at step 1: behind the zero-initialised side_proj, or (WTI's last biases, before a softmax over
        # tokens) a zero exact gradient whose float noise is ~1e-8
        if d1.abs().max() < 1e-5:
            assert d2.abs().max() < 1e-5, key
            continue
        moved.append(key)
        expected = d1 * side_fraction if key.startswith("side.") else d1
        torch.testing.assert_close(d2, expected, rtol=1e-3, atol=1e-6, msg=key)
    assert any(k.startswith("side.") for k in moved) and "logit_scale" in moved and any(k.startswith("wti.")
                                                                                         for k in moved), moved
