"""The retrieval task's evaluation: single- vs multi-caption rules, and dual-softmax re-ranking as a separate line."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from side4video.errors import ConfigError
from side4video.retrieval.annotations import CaptionSet
from side4video.tasks import TASKS


def captions(per_video):
    out = CaptionSet(source="test")
    for video, count in enumerate(per_video):
        out.add(f"v{video}", [f"caption {video}.{i}" for i in range(count)])
    return out


def test_a_hub_video_is_demoted_by_dsl_only_in_the_dsl_line(tmp_path):
    # video 0 scores high for every caption (a hub): caption 1 ranks it above its own video 1
    sim = torch.tensor([[0.9, 0.3], [0.8, 0.7]])
    plain = TASKS.build({"type": "retrieval"}).evaluation(sim, captions([1, 1]))
    assert plain.metrics["t2v_R1"] == 50.0 and "dsl_t2v_R1" not in plain.metrics
    task = TASKS.build({"type": "retrieval", "dsl": True})
    evaluation = task.evaluation(sim, captions([1, 1]))
    # softmax over the captions of video 0's column ([0.9, 0.8] x 100) leaves caption 1 almost nothing there
    assert evaluation.metrics["t2v_R1"] == 50.0 and evaluation.metrics["dsl_t2v_R1"] == 100.0
    task.write_evaluation(evaluation, tmp_path)
    saved = np.load(tmp_path / "sims.npz")
    np.testing.assert_array_equal(saved["sim"], sim.numpy())          # the raw matrix, never the re-ranked one
    assert list(saved["video_ids"]) == ["v0", "v1"] and list(saved["caption_video"]) == [0, 1]


def test_multi_caption_sets_use_the_group_rule_and_single_caption_sets_numpy_medians():
    # 3 videos; captions 0,1 -> video 0, caption 2 -> video 1, caption 3 -> video 2
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.6]])
    metrics = TASKS.build({"type": "retrieval"}).evaluation(sim, captions([2, 1, 1])).metrics
    assert metrics["multi_caption"] and metrics["num_captions"] == 4 and metrics["num_videos"] == 3
    assert metrics["t2v_R1"] == 75.0          # caption 1 (video 0) ranks video 1 first
    # video 1 as a query: video 0's caption group scores its best caption (0.8) above video 1's own (0.7)
    assert metrics["v2t_R1"] == pytest.approx(200 / 3)
    # one caption per video (captions 0, 2, 3): ranks 1, 1, 1 both ways
    single = TASKS.build({"type": "retrieval"}).evaluation(sim[[0, 2, 3]], captions([1, 1, 1]))
    assert single.metrics["multi_caption"] is False and single.metrics["t2v_MdR"] == 1.0
    assert single.metrics["t2v_R1"] == 100.0 and single.metrics["v2t_R1"] == 100.0


def test_bad_task_arguments_are_one_line():
    with pytest.raises(ConfigError, match="sim_header must be one of wti, meanP"):
        TASKS.build({"type": "retrieval", "sim_header": "seqLSTM"})
    with pytest.raises(ConfigError, match="video_head must be one of"):
        TASKS.build({"type": "retrieval", "video_head": "lstm"})
