"""SV-Mix plugin (side4video/plugins/svmix.py): MixBlock initialisation, label ratios, gradient routing, fallback,
EMA evaluation, exact state round trip, config validation. Tiny backbone (4 layers, width 64, patch 8, 64 px)."""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from side4video.config import load_config
from side4video.errors import ConfigError
from side4video.models import create_assembler, create_model, model_inputs
from side4video.plugins import PluginContext, create_plugins
from side4video.plugins.svmix import SPATIAL, TEMPORAL, MixBlock, SVMixPlugin
from side4video.tasks import TrainBatch, classification_loss

NUM_CLASSES = 4
B, T, SIZE = 4, 3, 64


@pytest.fixture(scope="module")
def backbone():
    from side4video.backbones import create_backbone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return create_backbone("side4video/assets/tiny_clip.json", pretrained=False)


def make_cfg(*extra: str):
    return load_config(None, [f"data.num_classes={NUM_CLASSES}", "solver.plugins=[{type: svmix}]", *extra])


def make_model(backbone, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("side4video", backbone.info, NUM_CLASSES, side_dim=32)


def make_plugin(backbone, model=None, cfg=None, **kwargs):
    plugin = SVMixPlugin(**kwargs)
    model = model if model is not None else make_model(backbone)
    ctx = PluginContext(cfg=cfg if cfg is not None else make_cfg("solver.smoothing=0.1"), model=model,
                        backbone=backbone, assembler=create_assembler(None), num_classes=NUM_CLASSES,
                        device=torch.device("cpu"))
    block = plugin.setup(ctx)
    return plugin, model, block


def make_batch(seed: int = 1, labels=(0, 1, 2, 3), frames: int = T):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(B, frames, 3, SIZE, SIZE, generator=g)
    labels = torch.tensor(labels)
    return TrainBatch(frames=frames, labels=labels, targets=labels)


def perturb(block: MixBlock, seed: int = 3, scale: float = 0.5):
    """Move the MixBlock away from its plain-mixup initialisation (as training would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# -- initialisation ---------------------------------------------------------------------------------------------
def test_value_projection_init_gives_plain_mixup_mask(backbone):
    plugin, _, block = make_plugin(backbone)
    assert torch.all(block.value.weight[0, :-1] == 0) and block.value.weight[0, -1] == 4 and block.value.bias == 0
    assert block.inter_dim == backbone.info.width        # inter dim = C for ViTs
    features = plugin.features(make_batch().frames)
    assert features.shape == (B, T, SIZE // 8, SIZE // 8, backbone.info.width)
    perm = torch.randperm(B)
    for mode in (SPATIAL, TEMPORAL):
        for lam in (0.1, 0.3, 0.5, 0.77, 0.9):
            m = block(features, lam, perm, mode)
            assert m.shape == ((B, T, 8, 8) if mode == SPATIAL else (B, T, 1, 1))
            # attention rows sum to 1 and v = 4·(0.5 − λ) everywhere → m = σ(2 − 4λ) exactly
            torch.testing.assert_close(m, torch.full_like(m, 1 / (1 + math.exp(-(2 - 4 * lam)))))


@pytest.mark.parametrize("mode", [SPATIAL, TEMPORAL])
def test_mask_mean_matches_lambda_at_init(backbone, mode):
    """Own fraction 1 − mean(m) vs λ over 200 draws of the online branch.

    Tolerances: at init 1 − m = σ(4λ − 2); |σ(4λ − 2) − λ| ≤ 0.078 on [0.08, 0.92] (checked below on a grid), and the
    fallback outside it is exact, so every draw is within 0.08. σ(4λ − 2) − λ is antisymmetric about λ = 0.5 and
    Beta(α, α) is symmetric, so the average error is 0 in expectation; its spread over draws is 0.028 (α = 1 and 0.8,
    fallback included), so the mean of 200 draws has a standard error of 0.002: 0.015 is a 7-sigma bound.
    """
    grid = torch.linspace(0.08, 0.92, 1001)
    assert (torch.sigmoid(4 * grid - 2) - grid).abs().max() <= 0.078
    plugin, _, _ = make_plugin(backbone, switch_prob=1.0 if mode == SPATIAL else 0.0)
    features = plugin.features(make_batch().frames)
    torch.manual_seed(7)
    errors = []
    for i in range(200):
        draw = plugin.draw(B)
        assert draw["mode"] == mode
        m = plugin.online_mask(features, draw["lam"], draw["perm"], mode)
        errors.append(float(1 - m.mean()) - draw["lam"])
        # the mask-learning branch's ratio term is zero at init inside the non-fallback range
        if i < 40 and 0.08 < draw["lam_k"] < 0.92:
            with torch.no_grad():
                m_k = plugin.block(features, draw["lam_k"], draw["perm_k"], mode)
            assert abs(1 - float(m_k.mean()) - draw["lam_k"]) < plugin.ratio_margin
    errors = torch.tensor(errors)
    assert errors.abs().max() <= 0.08
    assert abs(float(errors.mean())) <= 0.015


# -- label ratios -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [SPATIAL, TEMPORAL])
def test_label_ratio_and_soft_targets(backbone, mode):
    cfg = make_cfg("solver.smoothing=0.0")
    plugin, _, block = make_plugin(backbone, cfg=cfg, switch_prob=1.0 if mode == SPATIAL else 0.0)
    perturb(block)
    torch.manual_seed(11)
    for _ in range(5):
        batch = plugin.on_batch(make_batch())
        state = batch.extra["svmix"]
        ratio, perm, labels = state["label_ratio"], state["perm"], state["labels"]
        assert ((ratio >= 0) & (ratio <= 1)).all()
        torch.testing.assert_close(batch.targets.sum(1), torch.ones(B))
        for b in range(B):
            partner = int(perm[b])
            if partner == b:
                assert batch.targets[b, labels[b]] == pytest.approx(1.0)
                continue
            own, other = batch.targets[b, labels[b]], batch.targets[b, labels[partner]]
            assert own == pytest.approx(float(ratio[b])) and other == pytest.approx(1 - float(ratio[b]))
            assert float(own + other) == pytest.approx(1.0)
        # the saliency formula, by hand
        feats, m = state["features"], state["mask"].expand(B, T, 8, 8)
        s = torch.softmax(feats.mean(-1).reshape(B, -1), 1).reshape(B, T, 8, 8)
        a, c = (s * (1 - m)).sum((1, 2, 3)), (s[perm] * m).sum((1, 2, 3))
        torch.testing.assert_close(ratio, a / (a + c))
        # the mixed clip is (1−m)x + m·x[perm] with m constant on every 8x8 patch (spatial) or frame (temporal)
        x = state["frames"]
        up = m.repeat_interleave(8, 2).repeat_interleave(8, 3).unsqueeze(2)
        torch.testing.assert_close(batch.frames, (1 - up) * x + up * x[perm])
        assert not batch.frames.requires_grad and not batch.targets.requires_grad


def test_uniform_mask_gives_the_mask_ratio_and_smoothing_is_folded_in(backbone):
    plugin, _, _ = make_plugin(backbone, cfg=make_cfg("solver.smoothing=0.2"))
    features = plugin.features(make_batch().frames)
    perm = torch.tensor([1, 0, 3, 2])
    mask = torch.full((B, T, 8, 8), 0.3)
    torch.testing.assert_close(plugin.label_ratio(features, mask, perm), torch.full((B,), 0.7))
    targets = plugin.mixed_targets(torch.tensor([0, 1, 2, 3]), torch.full((B,), 0.7), perm)
    off = 0.2 / NUM_CLASSES
    assert targets[0].tolist() == pytest.approx([0.7 * (0.8 + off) + 0.3 * off, 0.3 * (0.8 + off) + 0.7 * off,
                                                 off, off])
    torch.testing.assert_close(targets.sum(1), torch.ones(B))


# -- gradients --------------------------------------------------------------------------------------------------
def test_mask_branch_gradient_reaches_only_the_mixblock(backbone):
    plugin, model, block = make_plugin(backbone)
    perturb(block)
    model.train()
    torch.manual_seed(5)
    batch = plugin.on_batch(make_batch())
    # online branch: the trainer's path; the detached mask gives the MixBlock nothing
    logits = model(model_inputs(backbone, model, batch.frames))
    classification_loss(logits, batch.targets).backward()
    assert all(p.grad is None for p in block.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)
    # mask-learning branch
    terms = plugin.loss(logits.detach(), None, batch, model)
    assert set(terms) == {"svmix_mask_ce", "svmix_ratio"}
    sum(terms.values()).backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in plugin.ema.parameters())
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    assert "svmix" not in batch.extra          # the stash is consumed


def test_ratio_term_form(backbone):
    """0.1·max(|1 − mean(m_k) − λ_k| − 0.1, 0), through a MixBlock pushed to m ≈ 1 (own fraction ≈ 0)."""
    plugin, model, block = make_plugin(backbone)
    with torch.no_grad():
        block.value.bias.fill_(20.0)
    batch = plugin.on_batch(make_batch())
    lam_k = batch.extra["svmix"]["lam_k"]
    terms = plugin.loss(None, None, batch, model)
    assert float(terms["svmix_ratio"].detach()) == pytest.approx(0.1 * max(abs(1 - 1.0 - lam_k) - 0.1, 0.0), abs=1e-6)


# -- fallback ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, 0.03, 0.08, 0.92, 0.97, 1.0])
@pytest.mark.parametrize("mode", [SPATIAL, TEMPORAL])
def test_constant_lambda_fallback(backbone, lam, mode):
    plugin, _, block = make_plugin(backbone, cfg=make_cfg("solver.smoothing=0.0"))
    perturb(block)                 # the MixBlock would give a non-uniform mask here
    perm = torch.tensor([1, 2, 3, 0])
    plugin.draw = lambda batch_size: {"mode": mode, "lam": lam, "lam_k": 0.5, "perm": perm, "perm_k": perm}
    batch = plugin.on_batch(make_batch())
    state = batch.extra["svmix"]
    assert torch.all(state["mask"] == 1 - lam)
    x = state["frames"]
    torch.testing.assert_close(batch.frames, lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(state["label_ratio"], torch.full((B,), lam))
    expected = lam * torch.eye(NUM_CLASSES)[[0, 1, 2, 3]] + (1 - lam) * torch.eye(NUM_CLASSES)[[1, 2, 3, 0]]
    torch.testing.assert_close(batch.targets, expected)


def test_no_fallback_inside_the_range(backbone):
    plugin, _, block = make_plugin(backbone)
    perturb(block)
    features = plugin.features(make_batch().frames)
    m = plugin.online_mask(features, 0.5, torch.tensor([1, 2, 3, 0]), SPATIAL)
    assert float(m.std()) > 1e-3 and not m.requires_grad


# -- EMA --------------------------------------------------------------------------------------------------------
def test_evaluation_uses_the_ema_model(backbone):
    plugin, model, _ = make_plugin(backbone, ema_decay=0.9)
    assert plugin.eval_model(model) is plugin.ema and plugin.ema is not model
    assert not plugin.ema.training
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        plugin.after_step(step, model)
        decay = 0.9                                # constant, from the initial copy on (spec: m = 0.999 every step)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v
            else:
                expected[k] = v.clone()
    ema_state = plugin.ema.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(ema_state[k], v)
    differs = [not torch.equal(a, b) for a, b in zip(plugin.ema.parameters(), model.parameters())]
    assert any(differs)


def test_refuses_a_second_ema_and_mixup(backbone):
    with pytest.raises(ConfigError, match="ema_decay"):
        make_plugin(backbone, cfg=load_config(None, [f"data.num_classes={NUM_CLASSES}",
                                                     "solver.plugins=[{type: ema}, {type: svmix}]"]))
    with pytest.raises(ConfigError, match="mixup"):
        make_plugin(backbone, cfg=make_cfg("solver.mixup=0.8"))


# -- state round trip -------------------------------------------------------------------------------------------
def _train_steps(plugin, model, block, backbone, steps: int, first_step: int = 1):
    optimizer = torch.optim.SGD(list(model.parameters()) + list(block.parameters()), lr=0.1)
    last = None
    for step in range(first_step, first_step + steps):
        batch = plugin.on_batch(make_batch(seed=step, frames=2))
        inputs = model_inputs(backbone, model, batch.frames)
        logits = model(inputs)
        total = classification_loss(logits, batch.targets)
        for term in plugin.loss(logits, inputs, batch, model).values():
            total = total + term
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        plugin.after_step(step, model)
        last = total.detach()
    return last


def test_state_dict_round_trip_gives_the_same_next_loss(backbone):
    torch.manual_seed(21)
    plugin, model, block = make_plugin(backbone, ema_decay=0.5)
    model.train()
    _train_steps(plugin, model, block, backbone, 2)
    # the checkpoint's layout (the trainer's): the EMA is written once, as the evaluated weights
    from side4video.engine.checkpoint import restore_weights, weights_state
    saved = copy.deepcopy(weights_state(model, plugin.eval_model(model), {"svmix": block}, [plugin]))
    assert saved["plugins"] == {"svmix": {}} and saved["eval_model"].keys() == saved["model"].keys()
    rng = torch.get_rng_state()
    expected = _train_steps(plugin, model, block, backbone, 1, first_step=3)

    def rebuilt(load_ema: bool):
        fresh = make_model(backbone, seed=99)
        other, _, other_block = make_plugin(backbone, model=make_model(backbone, seed=98), ema_decay=0.5)
        state = saved if load_ema else {k: v for k, v in saved.items() if k != "eval_model"}
        restore_weights(state, fresh, other.eval_model(fresh), {"svmix": other_block}, [other])
        fresh.train()
        torch.set_rng_state(rng)
        return _train_steps(other, fresh, other_block, backbone, 1, first_step=3)

    assert torch.equal(rebuilt(True), expected)
    assert not torch.equal(rebuilt(False), expected)     # the EMA state matters to the loss


# -- config -----------------------------------------------------------------------------------------------------
def test_config_entry_validates_and_builds():
    cfg = load_config(None, ["data.num_classes=4", "solver.plugins=[{type: svmix}]"])
    (plugin,) = create_plugins(cfg)
    assert isinstance(plugin, SVMixPlugin) and plugin.lr_mult == 1.0
    cfg = load_config(None, ["data.num_classes=4", "solver.plugins=[{type: svmix, lr_mult: 5.0, ema_decay: 0.99}]"])
    (plugin,) = create_plugins(cfg)
    assert plugin.lr_mult == 5.0 and plugin.ema_plugin.decay == 0.99
    with pytest.raises(ConfigError, match="did you mean 'ema_decay'"):
        load_config(None, ["data.num_classes=4", "solver.plugins=[{type: svmix, ema_decy: 0.99}]"])
    with pytest.raises(ConfigError, match="fallback"):
        create_plugins(load_config(None, ["data.num_classes=4", "solver.plugins=[{type: svmix, fallback: 0.7}]"]))


def test_toy_config_validates():
    cfg = load_config("configs/toy/toy_svmix.yaml")
    assert [dict(p)["type"] for p in cfg.solver.plugins] == ["svmix"]


def test_draws_switch_modes_half_the_time_with_their_beta_distributions(backbone):
    """Spatial mode with p = 0.5 and λ ~ Beta(1, 1) (variance 1/12); temporal mode λ ~ Beta(0.8, 0.8) (variance
    0.64 / (2.56 · 2.6) ≈ 0.0962); λ_k ~ Beta(1, 1). 4000 draws: each statistic within ~4 standard errors."""
    torch.manual_seed(5)
    plugin, _, _ = make_plugin(backbone)
    draws = [plugin.draw(4) for _ in range(4000)]
    spatial = torch.tensor([d["lam"] for d in draws if d["mode"] == SPATIAL])
    temporal = torch.tensor([d["lam"] for d in draws if d["mode"] == TEMPORAL])
    lam_k = torch.tensor([d["lam_k"] for d in draws])
    assert abs(len(spatial) / 4000 - 0.5) < 0.03
    for values, variance in ((spatial, 1 / 12), (temporal, 0.64 / (2.56 * 2.6)), (lam_k, 1 / 12)):
        assert abs(values.mean().item() - 0.5) < 0.03
        assert abs(values.var().item() - variance) < 0.0045, (values.var().item(), variance)
    assert temporal.var() > spatial.var()        # Beta(0.8, 0.8) puts more mass near 0 and 1 than the uniform
    assert all(sorted(d["perm"].tolist()) == [0, 1, 2, 3] for d in draws[:10])
