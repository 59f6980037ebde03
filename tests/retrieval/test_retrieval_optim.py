"""The retrieval task's ``text_lr_mult``: a trained text tower gets optimizer groups of its own at ``text_lr_mult`` ×
the base lr, following the same schedule, built the way the trainer builds its optimizer (task → model → plugins'
TrainableParts → ``create_optimizer``)."""
from __future__ import annotations

import pytest
import torch

from side4video.config import load_config
from side4video.engine.backends import TorchBackend
from side4video.engine.builders import backbone_from_config, model_from_config
from side4video.engine.optim import create_optimizer, create_scheduler
from side4video.errors import ConfigError
from side4video.plugins import PluginContext, set_up_plugins
from side4video.tasks import TASKS
from tests.support import REPO

CONFIG = REPO / "configs" / "toy" / "toy_retrieval_msrvtt.yaml"
STEPS_PER_EPOCH = 4      # the toy config warms up for 1 epoch (4 steps), then decays by a cosine


def _optimizer(**task):
    """``(model, optimizer, scheduler, backend)`` of the toy retrieval config (random tiny CLIP) with ``task``
    options, as the trainer builds them."""
    overrides = {"network.pretrained": False, "task": {"type": "retrieval", **task}}
    cfg = load_config(CONFIG, overrides)
    backbone = backbone_from_config(cfg)
    model = model_from_config(cfg, backbone, seed=0)
    context = PluginContext(cfg=cfg, model=model, backbone=backbone, assembler=None, num_classes=0,
                            device=torch.device("cpu"))
    trainable, lr_mult = set_up_plugins([], context, cfg.solver.lr_mult)
    optimizer = create_optimizer(trainable, cfg.solver, lr_mult=lr_mult, prefix="model.")
    scheduler = create_scheduler(optimizer, cfg.solver, STEPS_PER_EPOCH)
    backend = TorchBackend(trainable, optimizer, scheduler, device=torch.device("cpu"))
    return model, optimizer, scheduler, backend


def _split(model, optimizer) -> tuple[list[dict], list[dict]]:
    """The optimizer's groups holding the text tower's parameters, and the others (no group mixes both)."""
    text_ids = {id(p) for p in model.text.parameters()} if model.text is not None else set()
    text, other = [], []
    for group in optimizer.param_groups:
        inside = {id(p) in text_ids for p in group["params"]}
        assert len(inside) == 1, "a group mixes text-tower and other parameters"
        (text if inside.pop() else other).append(group)
    return text, other


@pytest.mark.parametrize("options, mult", [({"train_text": True}, 1e-3),             # the default (the reference)
                                           ({"train_text": True, "text_lr_mult": 0.25}, 0.25)])
def test_the_text_tower_trains_in_its_own_groups_at_mult_times_the_scheduled_lr(options, mult, quiet_random_weights):
    model, optimizer, scheduler, backend = _optimizer(**options)
    text, other = _split(model, optimizer)
    assert text and other
    # every trainable text-tower parameter is in one of those groups (none left at the full rate)
    assert sum(len(g["params"]) for g in text) == sum(1 for p in model.text.parameters() if p.requires_grad) > 0
    seen = []
    for step in range(6):
        base = {g["lr"] for g in other}
        assert len(base) == 1
        (lr,) = base
        for group in text:
            assert group["lr"] == pytest.approx(mult * lr, rel=1e-12), step
        assert backend.lr() == lr, "the logged lr is the base rate, not the text tower's"
        seen.append(lr)
        optimizer.step()           # no gradients: a no-op that keeps the scheduler's call order honest
        scheduler.step()
    # the steps covered the warm-up (rising over 4 steps) and the cosine decay after it
    assert seen[0] < seen[1] < seen[2] < seen[3] and seen[5] < seen[4], seen


def test_without_train_text_there_is_no_text_group(quiet_random_weights):
    model, optimizer, _, backend = _optimizer(text_lr_mult=0.5)   # unused when frozen
    assert model.text is None and model.param_lr_mult() == {}
    assert {g["lr_mult"] for g in optimizer.param_groups} == {1.0}
    assert backend.lr() == optimizer.param_groups[0]["lr"]


def test_an_explicit_solver_lr_mult_for_the_text_tower_wins(quiet_random_weights):
    cfg = load_config(CONFIG, {"network.pretrained": False, "solver.lr_mult": {"text": 0.5},
                               "task": {"type": "retrieval", "train_text": True}})
    backbone = backbone_from_config(cfg)
    model = model_from_config(cfg, backbone, seed=0)
    optimizer = create_optimizer(model, cfg.solver)
    text, other = _split(model, optimizer)
    assert {g["lr_mult"] for g in text} == {0.5} and {g["lr_mult"] for g in other} == {1.0}


@pytest.mark.parametrize("bad", [0, -1e-3, "fast"])
def test_a_non_positive_text_lr_mult_is_one_line(bad):
    with pytest.raises(ConfigError, match=f"task 'retrieval': text_lr_mult must be > 0, got {bad!r}"):
        TASKS.build({"type": "retrieval", "train_text": True, "text_lr_mult": bad})
