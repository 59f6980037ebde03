"""The contract every registered part keeps, run over every entry of every registry: it builds from its defaults,
runs a forward and a training step (the engine's own step) on the tiny backbone, its state survives a round trip
(for side modules: the checkpoint round trip that test.py, predict and pretrain share), and declared causality holds.
A new entry is covered by being registered."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from dotmap import DotMap

from side4video.backbones import create_backbone
from side4video.config import load_config
from side4video.engine.backends import TorchBackend
from side4video.engine.builders import load_trainable_weights
from side4video.engine.checkpoint import FORMAT, create_checkpoint, restore_weights, weights_state
from side4video.engine.optim import create_optimizer, create_scheduler
from side4video.engine.step import StepParts, train_step
from side4video.files import atomic_save
from side4video.models import ASSEMBLERS, HEADS, TapAssembler, create_assembler, create_model, model_inputs
from side4video.modules import SIDE_MODULES, BlockContext, check_side_module_spec
from side4video.plugins import PLUGINS, PluginContext, create_plugins, set_up_plugins, validation_model
from side4video.tasks import TASKS, TrainBatch, create_task
from tests.support import TINY_CLIP_JSON

NUM_CLASSES, BATCH, FRAMES, SIZE = 4, 4, 4, 64


@pytest.fixture(scope="module")
def backbone():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return create_backbone(str(TINY_CLIP_JSON), pretrained=False)


def _cfg(**overrides):
    return load_config(None, {"data.num_classes": NUM_CLASSES, "data.input_size": SIZE, "network.side_dim": 32,
                              "network.arch": str(TINY_CLIP_JSON), "network.pretrained": False, **overrides})


def _batch(seed: int = 0, frames: int = FRAMES) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(BATCH) % NUM_CLASSES
    return TrainBatch(frames=torch.randn(BATCH, frames, 3, SIZE, SIZE, generator=g), labels=labels, targets=labels)


def _one_step(cfg, backbone, model, plugins=(), assembler=None, batch=None) -> tuple[torch.Tensor, TorchBackend]:
    """The engine's training step with a plain-torch backend; returns the loss and the backend."""
    task = create_task(cfg)
    context = PluginContext(cfg=cfg, model=model, backbone=backbone, assembler=assembler or TapAssembler(),
                            num_classes=NUM_CLASSES, device=torch.device("cpu"), task=task)
    trainable, lr_mult = set_up_plugins(list(plugins), context, cfg.solver.lr_mult)
    optimizer = create_optimizer(trainable, cfg.solver, lr_mult=lr_mult, prefix="model.")
    backend = TorchBackend(trainable, optimizer, create_scheduler(optimizer, cfg.solver, 4), device=torch.device("cpu"))
    parts = StepParts(backbone=backbone, model=model, task=task, assembler=assembler, plugins=list(plugins))
    loss = train_step(parts, batch or _batch(), backend)
    return loss, backend


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]


# -- side modules ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SIDE_MODULES.names())
def test_every_side_module_builds_runs_trains_and_round_trips_through_a_checkpoint(name, backbone, tmp_path):
    spec = check_side_module_spec({"type": name})
    cfg = _cfg(**{"network.temporal_module": "none", "network.side_modules": [spec]})
    torch.manual_seed(0)
    model = create_model("side4video", backbone.info, NUM_CLASSES, side_dim=32, temporal_module="none",
                         side_modules=[spec])
    own = [k for k in model.state_dict() if any(f".{slot}." in k for slot in ("pre_attn", "post_attn", "post_mlp"))]
    before = copy.deepcopy(model.state_dict())
    loss, backend = _one_step(cfg, backbone, model)
    assert torch.isfinite(loss) and backend.optimizer_steps == 1
    if any(p.requires_grad for k, p in model.named_parameters() if k in own):
        assert set(_changed(before, model)) & set(own), f"{name}: its weights did not move in a step"
    # the checkpoint round trip of test.py / predict / pretrain: weights written in the training layout load back
    # into a fresh model exactly (whatever the module calls its tensors), for this format and the older one
    model.eval()
    inputs = model_inputs(backbone, model, _batch(1).frames)
    expected = model(inputs)
    for checkpoint_format in (FORMAT, "side4video-checkpoint-v1"):
        checkpoint = create_checkpoint(position={"epoch": 1, "step_in_epoch": 0, "global_step": 1}, weights=
                                       weights_state(model, model, {}, []), optimizer=[], scheduler={}, counters={},
                                       rng=[], backbone={}, config={}, world_size=1, zero_stage=0, head="side4video",
                                       num_classes=NUM_CLASSES)
        checkpoint["format"] = checkpoint_format
        path = tmp_path / f"{checkpoint_format}.pt"
        atomic_save(checkpoint, path)
        fresh = create_model("side4video", backbone.info, NUM_CLASSES, side_dim=32, temporal_module="none",
                             side_modules=[spec])
        load_trainable_weights(fresh, path, backbone)
        fresh.eval()
        torch.testing.assert_close(fresh(inputs), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", SIDE_MODULES.names())
def test_a_side_module_that_declares_causality_never_looks_ahead(name):
    torch.manual_seed(0)
    module = SIDE_MODULES.build(check_side_module_spec({"type": name}), 32, reserved=("slot", "blocks")).eval()
    b, t, h, w = 2, 5, 3, 3
    x = torch.randn(b * t, h * w, 32)
    changed = x.clone().reshape(b, t, h * w, 32)
    changed[:, 3:] += torch.randn_like(changed[:, 3:])
    ctx = lambda: BlockContext(grid=(b, t, h, w), index=0, depth=1)  # noqa: E731
    with torch.no_grad():
        out, out_changed = module(x, ctx()), module(changed.reshape(x.shape), ctx())
    first = slice(0, 3)
    same_past = torch.allclose(out.reshape(b, t, -1)[:, first], out_changed.reshape(b, t, -1)[:, first])
    if module.causal:
        assert same_past, f"{name} declares causal but frames 0-2 depend on later frames"
    elif name in ("conv", "gc", "h2cn", "nonlocal", "r2plus1d"):
        assert not same_past, f"{name} looks at later frames and must not declare causal"


# -- training plugins -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PLUGINS.names())
def test_every_plugin_builds_trains_and_round_trips_its_state(name, backbone):
    cfg = _cfg(**{"solver.plugins": [{"type": name}]})
    (plugin,) = create_plugins(cfg)
    torch.manual_seed(0)
    model = create_model("side4video", backbone.info, NUM_CLASSES, side_dim=32)
    before = copy.deepcopy(model.state_dict())
    loss, backend = _one_step(cfg, backbone, model, plugins=[plugin])
    assert torch.isfinite(loss) and _changed(before, model)
    validated = validation_model(model, [plugin])
    state = weights_state(model, validated, backend.module.parts, [plugin])
    (again,) = create_plugins(cfg)
    torch.manual_seed(1)
    other = create_model("side4video", backbone.info, NUM_CLASSES, side_dim=32)
    _, other_backend = _one_step(cfg, backbone, other, plugins=[again], batch=_batch(5))
    restore_weights(state, other, validation_model(other, [again]), other_backend.module.parts, [again])
    for (key, a), b in zip(validation_model(other, [again]).state_dict().items(), validated.state_dict().values()):
        assert torch.equal(a, b), f"{name}: {key} differs after the round trip"
    for part, reloaded in zip(backend.module.parts.values(), other_backend.module.parts.values()):
        assert all(torch.equal(a, b) for a, b in zip(part.state_dict().values(), reloaded.state_dict().values()))


# -- heads, assemblers, tasks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_builds_runs_and_trains(name, backbone):
    cfg = _cfg(**{"network.head": name})
    torch.manual_seed(0)
    options = {"side_dim": 32} if name == "side4video" else {"num_frames": FRAMES} if name == "temporal_transformer" \
        else {}
    model = create_model(name, backbone.info, NUM_CLASSES, **options)
    before = copy.deepcopy(model.state_dict())
    loss, _ = _one_step(cfg, backbone, model)
    assert torch.isfinite(loss) and _changed(before, model)


@pytest.mark.parametrize("name", ASSEMBLERS.names())
def test_every_assembler_builds_and_feeds_a_model_that_trains(name, backbone):
    assembler = create_assembler({"type": name})
    frames = FRAMES * 3 if name != "tap" else FRAMES
    clip = getattr(assembler, "num_frames", None) or FRAMES
    cfg = _cfg(**{"network.assembler": {"type": name}})
    torch.manual_seed(0)
    model = create_model("side4video", backbone.info, NUM_CLASSES, side_dim=32)
    batch = _batch(frames=frames)
    batch.mask = torch.ones(BATCH, frames, dtype=torch.bool)
    inputs = model_inputs(backbone, model, batch.frames, assembler, batch.mask)
    assert inputs.num_frames == clip and inputs.patch_tokens[0].shape[0] == BATCH * clip
    before = copy.deepcopy(model.state_dict())
    loss, _ = _one_step(cfg, backbone, model, assembler=assembler, batch=batch)
    assert torch.isfinite(loss) and _changed(before, model)
    assert assembler.state_dict() == create_assembler({"type": name}).state_dict()


# what a task needs besides the defaults: config keys, and the extra fields of its training batch
TASK_EXAMPLES = {
    "retrieval": ({"data.dataset": "jsonl", "data.train_csv": "train.jsonl", "data.val_csv": "val.jsonl",
                   "data.features_path": "videos"},
                  {"captions": [f"caption {i}" for i in range(BATCH)]}),
}


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_builds_from_a_config_and_its_loss_trains_a_model(name, backbone):
    overrides, extra = TASK_EXAMPLES.get(name, ({}, {}))
    cfg = _cfg(**{"task": {"type": name}, **overrides})
    task = create_task(cfg)
    assert task.name == name and isinstance(task.monitor, str)
    torch.manual_seed(0)
    model = task.build_model(cfg, backbone) or create_model("side4video", backbone.info, NUM_CLASSES, side_dim=32)
    before = copy.deepcopy(model.state_dict())
    batch = _batch()
    batch.extra.update(extra)
    loss, _ = _one_step(cfg, backbone, model, batch=batch)
    assert torch.isfinite(loss) and _changed(before, model)


def test_registries_check_the_base_class_and_the_name():
    from side4video.errors import ConfigError
    from side4video.plugins import TrainPlugin
    from side4video.registry import Registry
    plugins = Registry("training plugin", base=TrainPlugin, name_attribute="name")

    class Named(TrainPlugin):
        name = "other"

    with pytest.raises(ConfigError, match="Named.name is 'other', but it is named 'named'"):
        plugins.register("named", Named)
    with pytest.raises(ConfigError, match="is not a subclass of"):
        plugins.register("dict", DotMap)
    with pytest.raises(ValueError, match="registered twice"):
        SIDE_MODULES.register("conv", type("Other", (SIDE_MODULES.get("tsm"),), {}))
