"""Engine pieces without training runs: optimizer groups, schedules, checkpoints, view averaging, metrics."""
from __future__ import annotations

import gc
import math
import os
import random
import shutil
import sys
import sysconfig
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from dotmap import DotMap

from side4video.backbones.frozen import BackboneInfo
from side4video.config import load_config
from side4video.engine.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from side4video.engine.distributed import prepare_accelerator_env
from side4video.engine.memory import SavedTensorMeter
from side4video.engine.optim import lr_factor_fn, param_groups
from side4video.files import atomic_save
from side4video.models import create_model
from side4video.tasks.metrics import confusion_matrix, summarize, topk_accuracy
from side4video.tasks.views import aggregate_views, forward_views

TINY = BackboneInfo(arch="tiny", family="clip", width=48, num_layers=2, patch_size=8, image_size=32, embed_dim=24,
                    weights=None, weights_format=None, quick_gelu=False)


def test_no_decay_on_norms_biases_and_position_embeddings():
    model = create_model("side4video", TINY, 5, side_dim=32)
    groups = param_groups(model, 0.15)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    plain = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    assert "pos_embed" in plain and "fc.bias" in plain and "blocks.0.attn_norm.weight" in plain
    assert "blocks.0.mlp_norm.weight" in plain and "stem.bn.weight" in plain
    assert "fc.weight" in decayed and "blocks.0.attn.qkv.weight" in decayed and "stem.conv.weight" in decayed
    everything = param_groups(model, 0.15, decay_all=True)
    assert all(g["weight_decay"] == 0.15 for g in everything)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_lr_multipliers_by_prefix():
    model = create_model("side4video", TINY, 5, side_dim=32)
    groups = param_groups(model, 0.1, lr_mult={"fc": 10, "blocks.1": 2})
    mult = {n: g["lr_mult"] for g in groups for n in g["names"]}
    assert mult["fc.weight"] == 10 and mult["blocks.1.attn.qkv.weight"] == 2 and mult["blocks.0.attn.qkv.weight"] == 1
    head = {n: g["lr_mult"] for g in param_groups(model, 0.1, lr_mult={"head": 10}) for n in g["names"]}
    assert head["fc.weight"] == head["head_norm.weight"] == 10 and head["blocks.0.attn.qkv.weight"] == 1
    from side4video.errors import ConfigError
    with pytest.raises(ConfigError, match=r"no trainable parameter starts with \['heads'\]; the model's parts are "):
        param_groups(model, 0.1, lr_mult={"heads": 10})


def test_a_plugins_trainable_part_gets_optimizer_groups_of_its_own():
    """Same lr multiplier as the model (1.0) and still its own groups, with the plugin's weight decay."""
    from side4video.engine.optim import create_optimizer
    from side4video.plugins import TrainableParts
    model = create_model("side4video", TINY, 5, side_dim=32)
    block = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    trainable = TrainableParts(model, {"svmix": block}, weight_decay={"svmix": 0.5})
    solver = load_config(None, ["data.num_classes=5", "solver.weight_decay=0.05"]).solver
    optimizer = create_optimizer(trainable, solver, lr_mult={"parts.svmix": 1.0}, prefix="model.")
    block_ids = {id(p) for p in block.parameters()}
    own = [g for g in optimizer.param_groups if {id(p) for p in g["params"]} <= block_ids]
    mixed = [g for g in optimizer.param_groups if {id(p) for p in g["params"]} & block_ids
             and not {id(p) for p in g["params"]} <= block_ids]
    assert not mixed and sum(len(g["params"]) for g in own) == 4
    assert sorted(g["weight_decay"] for g in own) == [0.0, 0.5]      # biases/norms without decay, as elsewhere
    assert {g["weight_decay"] for g in optimizer.param_groups if g not in own} == {0.0, 0.05}


def test_warmup_cosine_and_step_schedules():
    solver = DotMap(lr=1.0, lr_warmup_step=1, epochs=5, min_lr=0.0, type="cosine", lr_steps=[], lr_decay=0.1)
    factor = lr_factor_fn(solver, steps_per_epoch=10)
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert factor(10) == pytest.approx(1.0)
    assert factor(30) == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert factor(50) == pytest.approx(0.0, abs=1e-12)
    step = lr_factor_fn(DotMap(solver.toDict(), type="step", lr_steps=[2, 4], lr_warmup_step=0), 10)
    assert [step(s) for s in (0, 19, 20, 39, 40)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_atomic_checkpoint_roundtrip_with_weights_only(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    atomic_save({"model": {"w": torch.ones(2)}, "epoch": 1}, path)
    atomic_save({"model": {"w": torch.zeros(2)}, "epoch": 2}, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"], "no temporary file may remain"
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and torch.equal(state["model"]["w"], torch.zeros(2))
    (tmp_path / "evil.pt").write_bytes(b"\x80\x04\x95not a real pickle")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_rng_state_roundtrip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    atomic_save({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_view_scores_softmax_then_mean_by_hand():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])          # one video, two views
    def softmax(a, b):
        return math.exp(a) / (math.exp(a) + math.exp(b))
    expected = [(softmax(2, 0) + softmax(0, 1)) / 2, (softmax(0, 2) + softmax(1, 0)) / 2]
    torch.testing.assert_close(aggregate_views(logits, "prob")[0], torch.tensor(expected))
    torch.testing.assert_close(aggregate_views(logits, "logit")[0], torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError):
        aggregate_views(logits, "max")


def test_views_are_chunked_without_changing_scores(quiet_random_weights):
    from side4video.backbones import create_backbone
    from tests.support import TINY_CLIP_JSON
    torch.manual_seed(0)
    backbone = create_backbone(TINY_CLIP_JSON, pretrained=False)
    model = create_model("side4video", backbone.info, 4, side_dim=32).eval()
    frames = torch.randn(2, 6, 4, 3, 64, 64)          # 2 videos x 6 views
    whole = forward_views(backbone, model, frames, max_views_per_forward=64)
    chunked = forward_views(backbone, model, frames, max_views_per_forward=5)
    assert whole.shape == (2, 6, 4)
    torch.testing.assert_close(whole, chunked, rtol=1e-4, atol=1e-5)


def test_metrics_by_hand():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.0, 0.9]])
    labels = np.array([0, 1, 1, 1])
    assert topk_accuracy(scores, labels, (1, 2)) == {1: 50.0, 2: 75.0}
    cm = confusion_matrix(scores.argmax(1), labels, 3)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]
    summary = summarize(scores, labels, 3)
    assert summary["top1"] == 50.0 and summary["top5"] == 100.0
    assert summary["mean_class_acc"] == pytest.approx((100 + 100 / 3) / 2)   # class 2 has no videos: excluded
    assert summary["per_class_acc"][2] is None


def test_deepspeed_config_comes_from_the_yaml():
    from side4video.engine.trainer import deepspeed_config
    cfg = load_config(None, ["data.num_classes=3", "solver.zero_stage=2", "solver.precision=bf16",
                             "solver.grad_accumulation_steps=4", "solver.clip_gradient=1.5"])
    ds = deepspeed_config(cfg, micro_batch=8, world_size=2)
    assert ds["train_batch_size"] == 64 and ds["gradient_accumulation_steps"] == 4
    assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_clipping"] == 1.5
    assert ds["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    with pytest.raises(ValueError, match="fp16 needs solver.zero_stage 0"):
        deepspeed_config(load_config(None, ["data.num_classes=3", "solver.zero_stage=1", "solver.precision=fp16"]),
                         8, 1)


def test_flipped_views_are_mapped_back_before_averaging():
    """10-crop testing flips half the views: a flipped 'moving left' view votes for 'moving right'."""
    from side4video.tasks.views import collect_scores

    class FixedLogits(torch.nn.Module):
        backbone_layers, needs_embedding = [], False

        def forward(self, inputs):
            return torch.tensor([[0.0, 4.0, 0.0]]).repeat(inputs.frames.shape[0], 1)   # every view says class 1

    class NoBackbone:
        def tap(self, frames, layers, embedding):
            return DotMap(cls_tokens=[], patch_tokens=[], layers=[], embedding=None)

    batch = {"frames": torch.zeros(1, 2, 1, 3, 4, 4, dtype=torch.uint8), "label": torch.tensor([0]),
             "index": torch.tensor([0]), "video_id": ["v"], "valid": torch.tensor([True]), "errors": [],
             "sample_errors": [[]], "flipped": torch.tensor([[False, True]])}
    scores = collect_scores(NoBackbone(), FixedLogits(), [batch], torch.device("cpu"), mean=[0, 0, 0], std=[1, 1, 1],
                            progress=False, flip_permutation=torch.tensor([1, 0, 2]))
    view = torch.softmax(torch.tensor([0.0, 4.0, 0.0]), 0).numpy()
    np.testing.assert_allclose(scores.scores[0], (view + view[[1, 0, 2]]) / 2, rtol=1e-6)


def test_every_launch_path_builds_deepspeed_helpers_with_the_environments_own_ninja(monkeypatch):
    """A shell without the environment activated finds the system's ninja first: DeepSpeed's helpers must still be
    built with the environment's, or two ninja versions rebuild them on every switch of launch path."""
    scripts = sysconfig.get_path("scripts")
    if not (Path(scripts) / "ninja").is_file():
        pytest.skip("this environment has no ninja of its own")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    prepare_accelerator_env()
    assert shutil.which("ninja") == str(Path(scripts) / "ninja")
    assert os.environ["TORCH_EXTENSIONS_DIR"] == os.path.join(sys.prefix, "torch_extensions")


def test_the_deepspeed_adapter_names_exist_in_the_installed_deepspeed():
    """The private DeepSpeed names the adapter uses (kept in one file): a DeepSpeed upgrade that moves one fails here
    (the step counters are instance attributes: the in-process training test checks them on a real engine)."""
    prepare_accelerator_env()
    from deepspeed.runtime.engine import DeepSpeedEngine

    from side4video.engine.deepspeed_adapter import PRIVATE_METHODS
    assert PRIVATE_METHODS and all(callable(getattr(DeepSpeedEngine, name, None)) for name in PRIVATE_METHODS)
    for public in ("zero_optimization", "zero_load_from_fp32_weights", "fp16_enabled", "bfloat16_enabled",
                   "is_gradient_accumulation_boundary", "get_lr"):
        assert callable(getattr(DeepSpeedEngine, public, None)), public


def test_a_measured_forward_without_backward_leaves_no_graph_alive():
    """The saved-bytes meter must not tie a saved output to its own grad_fn (an uncollectable cycle): a forward that
    is measured and never run backward is freed as soon as it is dropped, and the count and gradients stay exact."""
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    meter = SavedTensorMeter.excluding(layer)
    with meter.hooks():
        out = torch.sigmoid(layer(x))        # sigmoid saves its own output
    alive = weakref.ref(out)
    assert meter.bytes == 2 * 4 * 8 * 4     # x (for the weight's gradient) and the sigmoid output, fp32
    del out
    gc.collect()
    assert alive() is None
    with meter.hooks():
        loss = torch.sigmoid(layer(x)).sum()
    loss.backward()
    measured = x.grad.clone()
    x.grad = None
    torch.sigmoid(layer(x)).sum().backward()
    assert torch.equal(measured, x.grad)
