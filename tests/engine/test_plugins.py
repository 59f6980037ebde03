"""Training plugins: video CutMix/mixup, the EMA model, the plugin registry and config checks."""
from __future__ import annotations

import pytest
import torch
from dotmap import DotMap

from side4video.plugins import EmaPlugin, MixupPlugin, PluginContext, create_plugins
from side4video.tasks import TrainBatch, classification_loss


def _context(model, num_classes=4):
    return PluginContext(cfg=None, model=model, backbone=None, assembler=None, num_classes=num_classes,
                         device=torch.device("cpu"))


def test_video_cutmix_cuts_one_box_through_every_frame_and_weights_the_label_by_its_area():
    torch.manual_seed(0)
    plugin = MixupPlugin(mixup=0.0, cutmix=1.0, prob=1.0, switch_prob=0.0, smoothing=0.0)
    plugin.setup(_context(torch.nn.Linear(1, 1)))
    b, t, h, w = 4, 5, 16, 20
    frames = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1, 1).expand(b, t, 3, h, w).clone()
    labels = torch.arange(b)
    out = plugin.on_batch(TrainBatch(frames=frames, labels=labels, targets=labels))
    mixed = out.frames
    partner = labels.flip(0)
    for i in range(b):
        pasted = mixed[i] == partner[i].float()                        # [T, 3, H, W]
        # the same box on every frame and every colour channel
        assert torch.equal(pasted, pasted[:1, :1].expand_as(pasted)), "the box differs across frames/channels"
        area = pasted[0, 0].float().mean().item()
        rows, cols = pasted[0, 0].any(1).nonzero(), pasted[0, 0].any(0).nonzero()
        if area > 0:
            box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            assert box.item() == pasted[0, 0].sum().item(), "the pasted region is one rectangle"
        # label weight of the partner equals the true area fraction of the H x W box
        assert out.targets[i, partner[i]].item() == pytest.approx(area, abs=1e-6)
        assert out.targets[i].sum().item() == pytest.approx(1.0)


def test_video_mixup_keeps_frames_and_soft_targets_consistent():
    torch.manual_seed(1)
    plugin = MixupPlugin(mixup=1.0, cutmix=0.0, smoothing=0.1)
    plugin.setup(_context(torch.nn.Linear(1, 1), num_classes=4))
    frames = torch.randn(4, 3, 3, 8, 8)
    out = plugin.on_batch(TrainBatch(frames=frames.clone(), labels=torch.arange(4), targets=torch.arange(4)))
    lam = 1 - out.targets[0, 3].item() / (1 - 0.1) + 0.1 / 4 / (1 - 0.1)   # smoothing folded in by timm
    torch.testing.assert_close(out.frames, lam * frames + (1 - lam) * frames.flip(0), rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match="even number of clips"):
        plugin.on_batch(TrainBatch(frames=torch.randn(3, 2, 3, 8, 8), labels=torch.arange(3), targets=torch.arange(3)))


def test_ema_weights_equal_the_formula_after_n_steps():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    plugin = EmaPlugin(decay=0.9)
    plugin.setup(_context(model))
    expected = {k: v.clone().float() for k, v in model.state_dict().items()}
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(8, 3))          # moves the running statistics too
        plugin.after_step(step, model)
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                expected[key] = 0.9 * expected[key] + 0.1 * value
            else:
                expected[key] = value.clone()
    for key, value in plugin.module.state_dict().items():
        torch.testing.assert_close(value.float(), expected[key].float(), rtol=1e-5, atol=1e-6, msg=key)
    assert plugin.eval_model(model) is plugin.module
    assert not any(p.requires_grad for p in plugin.module.parameters())
    # through the checkpoint layout: the validated EMA is written once (eval_model) and restored from there
    from side4video.engine.checkpoint import restore_weights, weights_state
    saved = weights_state(model, plugin.eval_model(model), {}, [plugin])
    assert saved["plugins"] == {"ema": {}} and saved["eval_model"].keys() == saved["model"].keys()
    restored = EmaPlugin(decay=0.9)
    restored.setup(_context(model))
    restore_weights(saved, model, restored.eval_model(model), {}, [restored])
    for a, b in zip(restored.module.state_dict().values(), plugin.module.state_dict().values()):
        assert torch.equal(a, b)
    # an EMA that is not validated is not eval_model: its plugin state carries it
    unvalidated = EmaPlugin(decay=0.9, validate=False)
    unvalidated.setup(_context(model))
    unvalidated.load_state_dict({"module": saved["eval_model"]})
    saved = weights_state(model, model, {}, [unvalidated])
    assert "eval_model" not in saved and saved["plugins"]["ema"]["module"].keys() == saved["model"].keys()
    again = EmaPlugin(decay=0.9, validate=False)
    again.setup(_context(model))
    restore_weights(saved, model, model, {}, [again])
    for a, b in zip(again.module.state_dict().values(), plugin.module.state_dict().values()):
        assert torch.equal(a, b)


def test_the_config_builds_the_plugins_it_lists():
    solver = DotMap(plugins=[{"type": "ema", "decay": 0.99}], mixup=0.8, cutmix=1.0, mix_prob=1.0,
                    mix_switch_prob=0.5, smoothing=0.1)
    plugins = create_plugins(DotMap(solver=solver))
    assert [p.name for p in plugins] == ["mixup", "ema"] and plugins[1].decay == 0.99
    assert plugins[0].options["cutmix_alpha"] == 1.0
    plugins[0].setup(PluginContext(cfg=DotMap(solver=solver), model=None, backbone=None, assembler=None,
                                   num_classes=4, device=torch.device("cpu")))
    assert plugins[0].mixup.label_smoothing == 0.1, "the implicit mixup plugin smooths as solver.smoothing says"
    with pytest.raises(Exception, match="more than once"):
        create_plugins(DotMap(solver=DotMap(solver.toDict(), plugins=[{"type": "ema"}, {"type": "ema"}])))


def test_classification_loss_smooths_hard_labels_and_takes_soft_targets_as_they_are():
    logits = torch.randn(3, 5)
    labels = torch.tensor([0, 2, 4])
    torch.testing.assert_close(classification_loss(logits, labels, 0.1),
                               torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1))
    soft = torch.nn.functional.one_hot(labels, 5).float() * 0.9 + 0.02
    expected = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(classification_loss(logits, soft, 0.1), expected)


def test_test_py_evaluates_the_weights_validation_scored():
    """An EMA/SV-Mix run's best.pt was chosen by the EMA copy's top-1: test.py and predict read that copy."""
    from side4video.engine.checkpoint import trainable_state_dict
    online, ema = {"fc.weight": torch.zeros(2, 2)}, {"fc.weight": torch.ones(2, 2)}
    checkpoint = {"model": online, "eval_model": ema}
    assert trainable_state_dict(checkpoint)["fc.weight"].sum() == 4
    assert trainable_state_dict(checkpoint, validated=False)["fc.weight"].sum() == 0
    assert trainable_state_dict({"model": online})["fc.weight"].sum() == 0


def test_two_plugins_that_each_provide_the_validated_model_are_refused_at_set_up():
    """The checkpoint keeps the validated weights once (eval_model): which plugin's they are must be unambiguous."""
    from side4video.errors import ConfigError
    from side4video.plugins import set_up_plugins, validation_model
    model = torch.nn.Linear(3, 4)
    first, second = EmaPlugin(decay=0.9), EmaPlugin(decay=0.5)
    second.name = "ema_slow"
    with pytest.raises(ConfigError, match="ema and ema_slow each provide the model to validate; keep one"):
        set_up_plugins([first, second], _context(model))
    quiet = EmaPlugin(decay=0.5, validate=False)
    quiet.name = "ema_quiet"
    trainable, _ = set_up_plugins([EmaPlugin(decay=0.9), quiet], _context(model))
    assert validation_model(model, [quiet]) is model


def test_an_explicit_mixup_entry_smooths_as_the_solver_unless_it_says_otherwise():
    from side4video.config import load_config
    cfg = load_config(None, {"data.num_classes": 4, "solver.smoothing": 0.2, "solver.plugins": [{"type": "mixup"}]})
    (plugin,) = create_plugins(cfg)
    plugin.setup(_context(None))   # no config in the context: the plugin's own default applies
    assert plugin.mixup.label_smoothing == 0.0
    plugin.setup(PluginContext(cfg=cfg, model=None, backbone=None, assembler=None, num_classes=4,
                               device=torch.device("cpu")))
    assert plugin.mixup.label_smoothing == 0.2, "solver.smoothing was silently replaced by the plugin's 0"
    (own,) = create_plugins(load_config(None, {"data.num_classes": 4, "solver.smoothing": 0.2,
                                               "solver.plugins": [{"type": "mixup", "smoothing": 0.05}]}))
    own.setup(PluginContext(cfg=cfg, model=None, backbone=None, assembler=None, num_classes=4,
                            device=torch.device("cpu")))
    assert own.mixup.label_smoothing == 0.05


def test_solver_mixup_next_to_an_explicit_mixup_entry_is_refused_in_one_line():
    from side4video.config import load_config
    from side4video.errors import ConfigError
    with pytest.raises(ConfigError) as info:
        load_config(None, {"data.num_classes": 4, "solver.mixup": 0.8, "solver.plugins": [{"type": "mixup"}]})
    assert "\n" not in str(info.value) and "both configure mixup" in str(info.value)
