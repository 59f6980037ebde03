"""GC side module: which axes each calibrator's gate sees, receptive fields, subsets, the scaled neutral gate."""
from __future__ import annotations

import pytest
import torch

from side4video.errors import ConfigError
from side4video.modules import BlockContext, check_side_module_spec, create_side_module
from side4video.modules.gc import CALIBRATORS, GroupContextualization

B, T, H, W = 2, 6, 6, 6
D = 34          # Cg = 8 channels per calibrator, 2 left over that always pass through
CG = D // 4


def _ctx(b=B, t=T, h=H, w=W) -> BlockContext:
    return BlockContext(grid=(b, t, h, w), index=0, depth=4)


def _tokens(seed=0, b=B, t=T, h=H, w=W, d=D) -> torch.Tensor:
    """Tokens bounded away from 0 (so output / input is the gate), float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b * t, h * w, d, generator=g, dtype=torch.float64)
    return x.sign() * (0.5 + x.abs())


def _video(x: torch.Tensor, b=B, t=T, h=H, w=W) -> torch.Tensor:
    return x.reshape(b, t, h, w, -1).permute(0, 4, 1, 2, 3)          # (B, C, T, h, w)


def _module(calibrators="GTSL", seed=0, eval_mode=True, **kwargs) -> GroupContextualization:
    """A GC with random (non-init) weights and random BN statistics, in float64."""
    torch.manual_seed(seed)
    m = GroupContextualization(D, calibrators=calibrators, **kwargs).double()
    m.init_weights(4)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 1.0))
        for mod in m.modules():
            if hasattr(mod, "running_var"):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.train(not eval_mode)


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs() > 1e-10


def test_shape_preserved_and_registered():
    m = GroupContextualization(D)
    m.init_weights(4)
    x = torch.randn(B * T, H * W, D)
    assert m(x, _ctx()).shape == x.shape
    spec = check_side_module_spec({"type": "gc", "calibrators": "T"})
    assert spec["slot"] == "pre_attn" and spec["blocks"] == "all" and not GroupContextualization.causal
    with pytest.raises(ConfigError):
        check_side_module_spec({"type": "gc", "calibrator": "T"})
    built = create_side_module(spec, 32, {"sync_bn": True, "drop_path": 0.1, "post_norm": True, "recompute": True})
    assert isinstance(built, GroupContextualization) and built.calibrators == "T" and built.t_norm.sync


def test_each_gate_sees_its_axes():
    """out / in per group: G constant over (T, h, w); T constant over (h, w), varying over t; S constant over t,
    varying over (h, w); L varying over t and (h, w); the leftover channels have gate exactly 1."""
    x = _tokens()
    m = _module(eval_mode=False)       # train mode: BN batch statistics, as in training
    ratio = _video(m(x, _ctx())) / _video(x)
    groups = {c: ratio[:, m.group_slice(c)] for c in CALIBRATORS}
    std = lambda r, dims: r.std(dim=dims).max().item()     # noqa: E731
    assert std(groups["G"], (2, 3, 4)) < 1e-12 and groups["G"].mean((2, 3, 4)).std() > 1e-3
    assert std(groups["T"], (3, 4)) < 1e-12 and groups["T"].mean((3, 4)).std(dim=2).min() > 1e-3
    assert std(groups["S"], 2) < 1e-12 and groups["S"].mean(2).flatten(2).std(dim=2).min() > 1e-3
    assert groups["L"].std(dim=2).min() > 1e-6 and groups["L"].flatten(3).std(dim=3).min() > 1e-6
    assert torch.equal(ratio[:, 4 * CG:], torch.ones_like(ratio[:, 4 * CG:]))
    gate_range = torch.stack([groups[c].min() for c in CALIBRATORS]).min(), ratio.max()
    assert 0 <= gate_range[0] and gate_range[1] <= 2.0      # s·σ(z) with s = 2


def test_receptive_fields():
    """Perturb one token (t0, i0, j0) of clip 0 (eval mode, so BatchNorm does not mix samples) and check where
    each group's output changes: G everywhere (pools over T, h, w); T at all positions of frames t0−1..t0+1
    (spatial pool, k=3 conv over t); S at all frames (mean over T) but only at the dilated 3×3 neighbours
    (i0 + 2a, j0 + 2b); L only at (t, i0, j0) for t in t0−1..t0+1; the leftover channels only at the token itself.
    Clip 1 never changes."""
    m = _module()
    t0, i0, j0 = 3, 2, 2
    x = _tokens()
    y = _video(m(x, _ctx()))
    v = _video(x).clone()
    v[0, :, t0, i0, j0] += 1.0
    y2 = _video(m(v.permute(0, 2, 3, 4, 1).reshape(x.shape), _ctx()))
    changed = _changed(y, y2)
    assert not changed[1].any()
    frames = torch.zeros(T, dtype=torch.bool)
    frames[t0 - 1:t0 + 2] = True
    point = torch.zeros(H, W, dtype=torch.bool)
    point[i0, j0] = True
    dilated = torch.zeros(H, W, dtype=torch.bool)
    dilated[i0 - 2:i0 + 3:2, j0 - 2:j0 + 3:2] = True
    expected = {
        "G": torch.ones(T, H, W, dtype=torch.bool),
        "T": frames[:, None, None].expand(T, H, W),
        "S": dilated.expand(T, H, W),
        "L": frames[:, None, None] & point,
    }
    for letter, where in expected.items():
        group = changed[0, m.group_slice(letter)]
        assert torch.equal(group.all(dim=0), where), letter       # every channel of the group changes there ...
        assert torch.equal(group.any(dim=0), where), letter       # ... and nowhere else
    only_input = torch.zeros(T, H, W, dtype=torch.bool)
    only_input[t0, i0, j0] = True                                   # the pass-through channels: the input itself
    assert torch.equal(changed[0, 4 * CG:].any(dim=0), only_input)


def test_only_t_and_l_see_temporal_order():
    """G and S pool over T (they see all frames, but orderless): reversing the frames reverses their output.
    T and L convolve over t, so their output is not reversal-equivariant."""
    m = _module()
    x = _tokens()
    rev = _video(x).flip(2)
    y = _video(m(x, _ctx()))
    y_rev = _video(m(rev.permute(0, 2, 3, 4, 1).reshape(x.shape), _ctx())).flip(2)
    for letter in "GS":
        assert torch.allclose(y[:, m.group_slice(letter)], y_rev[:, m.group_slice(letter)], atol=1e-12)
    for letter in "TL":
        assert (y[:, m.group_slice(letter)] - y_rev[:, m.group_slice(letter)]).abs().max() > 1e-3


@pytest.mark.parametrize("calibrators", ["T", "L", "GS"])
def test_subsets_leave_other_channels_untouched(calibrators):
    m = _module(calibrators, eval_mode=False)
    x = _tokens()
    out, inp = _video(m(x, _ctx())), _video(x)
    for letter in CALIBRATORS:
        s = m.group_slice(letter)
        if letter in calibrators:
            assert (out[:, s] - inp[:, s]).abs().max() > 1e-3, letter
        else:
            assert torch.equal(out[:, s], inp[:, s]), letter
    assert torch.equal(out[:, 4 * CG:], inp[:, 4 * CG:])
    assert m.group == CG       # the group size stays C // 4 whatever the subset
    expected = {"G": ["g_fc", "g_norm"], "T": ["t_conv", "t_norm"], "S": ["s_conv"], "L": ["l_conv", "l_norm"]}
    present = {name for name, _ in m.named_children()}
    assert present == {n for c in calibrators for n in expected[c]}


def test_neutral_context_is_identity_with_gate_scale_2():
    """Zero context z = 0 (zero weights; BN in train mode maps a constant 0 to β = 0): 2·σ(0) = 1 → identity;
    with the papers' plain sigmoid (gate_scale = 1) the stream is halved."""
    x = _tokens()
    for scale, factor in ((2.0, 1.0), (1.0, 0.5)):
        m = GroupContextualization(D, gate_scale=scale).double()
        m.init_weights(4)
        with torch.no_grad():
            for p in m.parameters():
                if p.dim() > 1:
                    p.zero_()
        out = m(x, _ctx())
        expected = torch.cat([x[..., :4 * CG] * factor, x[..., 4 * CG:]], dim=-1)
        assert torch.equal(out, expected)


def test_gradients_reach_every_parameter():
    m = GroupContextualization(D)
    m.init_weights(4)
    x = torch.randn(B * T, H * W, D, requires_grad=True)
    (m(x, _ctx()) * torch.randn(B * T, H * W, D)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None


def test_init_weights_survives_generic_reinit():
    """The network's generic init (norms to γ = 1, β = 0; here also projections to N(0, 0.02)) runs BEFORE
    init_weights; afterwards the module has its own init: ECal-G's Linear ~ N(0, 0.001), Xavier-normal convs."""
    m = GroupContextualization(64)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.normal_(0, 0.02) if p.dim() > 1 else (p.fill_(1.0) if name.endswith("weight") else p.zero_())
    m.init_weights(4)
    assert m.g_fc.weight.std().item() == pytest.approx(0.001, rel=0.2)
    for conv in (m.t_conv, m.s_conv, m.l_conv):
        fan_in = conv.weight[0].numel()
        fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
        assert conv.weight.std().item() == pytest.approx((2.0 / (fan_in + fan_out)) ** 0.5, rel=0.2)
    for norm in (m.g_norm, m.t_norm, m.l_norm):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()


@pytest.mark.parametrize("kwargs", [dict(calibrators=""), dict(calibrators="X"), dict(calibrators="GG"),
                                    dict(calibrators="gt"), dict(calibrators=3), dict(gate_scale=0.0),
                                    dict(gate_scale=-1.0), dict(gate_scale=float("nan")), dict(gate_scale=True)])
def test_rejects_nonsense_arguments(kwargs):
    with pytest.raises(ValueError):
        GroupContextualization(D, **kwargs)


def test_rejects_too_narrow_width():
    with pytest.raises(ValueError):
        GroupContextualization(3)
