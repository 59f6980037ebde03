"""H2CN's CHGC side module: one gate per (b, t, c), zero-padded hourglass (no wrap-around), the reduction width,
and the pooled hourglass equals the full-resolution one of the paper."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from side4video.errors import ConfigError
from side4video.modules import BlockContext, check_side_module_spec, create_side_module
from side4video.modules.h2cn import HourglassChannelGate

B, T, H, W, D = 2, 5, 4, 4, 64


def _ctx(b=B, t=T, h=H, w=W) -> BlockContext:
    return BlockContext(grid=(b, t, h, w), index=0, depth=4)


def _tokens(seed=0, d=D) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B * T, H * W, d, generator=g, dtype=torch.float64)
    return x.sign() * (0.5 + x.abs())


def _module(eval_mode=True, seed=0, **kwargs) -> HourglassChannelGate:
    """Random weights and BN statistics, float64."""
    torch.manual_seed(seed)
    m = HourglassChannelGate(D, **kwargs).double()
    m.init_weights(4)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.dim() > 1 else 1.0))
        for norm in (m.reduce_norm, m.expand_norm):
            norm.running_mean.normal_(0, 0.1)
            norm.running_var.uniform_(0.5, 1.5)
    return m.train(not eval_mode)


def test_shape_preserved_and_registered():
    m = HourglassChannelGate(D)
    m.init_weights(4)
    x = torch.randn(B * T, H * W, D)
    assert m(x, _ctx()).shape == x.shape
    spec = check_side_module_spec({"type": "h2cn"})
    assert spec == {"type": "h2cn", "slot": "pre_attn", "blocks": "all"} and not HourglassChannelGate.causal
    with pytest.raises(ConfigError):
        check_side_module_spec({"type": "h2cn", "reduce": 8})
    built = create_side_module({**spec, "reduction": 8}, 64, {"sync_bn": True, "drop_path": 0.1})
    assert built.reduced == 8 and built.expand_norm.sync


@pytest.mark.parametrize("dim,reduction,reduced", [(64, 16, 4), (320, 16, 20), (64, 8, 8), (8, 16, 1), (15, 16, 1)])
def test_reduction_channel_count(dim, reduction, reduced):
    m = HourglassChannelGate(dim, reduction=reduction)
    assert m.reduced == reduced
    assert m.reduce.weight.shape == (reduced, dim) and m.expand.weight.shape == (dim, reduced)
    assert m.spatial_agg.weight.shape == (reduced, 1, 3, 3) and m.hourglass.weight.shape == (reduced, 1, 3)
    expected = 2 * dim * reduced + 2 * reduced + 9 * reduced + 3 * reduced + 2 * dim
    assert sum(p.numel() for p in m.parameters()) == expected


def test_one_gate_per_frame_and_channel():
    """out / in is constant over the h·w tokens of a frame, and differs between frames and between channels."""
    x = _tokens()
    m = _module(eval_mode=False)
    ratio = (m(x, _ctx()) / x).reshape(B, T, H * W, D)
    assert ratio.std(dim=2).max() < 1e-12
    per_frame = ratio[:, :, 0]                                          # (B, T, D)
    assert per_frame.std(dim=1).mean() > 1e-2 and per_frame.std(dim=2).min() > 1e-2
    assert 0 <= ratio.min() and ratio.max() <= 2.0                      # gate_scale · σ


def test_zero_padding_at_the_time_ends():
    """Eval mode (BatchNorm statistics fixed, so samples do not mix through them). The gate of frame t sees frames
    t−1, t, t+1 only: perturbing the last frame leaves frame 0 unchanged and vice versa (zero padding, no
    wrap-around); the neighbours do change; the other clip never does."""
    m = _module()
    x = _tokens()
    y = m(x, _ctx()).reshape(B, T, H * W, D)

    def perturbed(frame: int) -> torch.Tensor:
        v = x.reshape(B, T, H * W, D).clone()
        v[0, frame] += torch.randn(H * W, D, dtype=v.dtype)
        return m(v.reshape(x.shape), _ctx()).reshape(B, T, H * W, D)

    for frame, same, differ in ((T - 1, [0, 1, 2], [T - 2]), (0, [T - 1, 2, 3], [1])):
        y2 = perturbed(frame)
        assert torch.allclose(y2[1], y[1], atol=0, rtol=0)
        for t in same:
            assert torch.allclose(y2[0, t], y[0, t], atol=1e-12, rtol=0), (frame, t)
        for t in differ:
            assert (y2[0, t] - y[0, t]).abs().max() > 1e-4, (frame, t)


def test_matches_full_resolution_hourglass_convolution():
    """The paper's order of operations, written out: reduce + BN, SpatialAgg, triplets [A_{t−1}, r_t, A_{t+1}]
    (zeros beyond the ends) interleaved into a 3T-long sequence at full resolution, depthwise Conv3d (3,1,1) with
    stride 3, global average pool, expand + BN, scaled sigmoid. The module pools before the hourglass conv."""
    m = _module()
    x = _tokens()
    cr = m.reduced
    r = m.reduce_norm(x @ m.reduce.weight.T).reshape(B, T, H, W, cr).permute(0, 4, 1, 2, 3)   # (B, Cr, T, h, w)
    a = F.conv2d(r.transpose(1, 2).reshape(B * T, cr, H, W), m.spatial_agg.weight, padding=1, groups=cr)
    a = a.reshape(B, T, cr, H, W).transpose(1, 2)
    zeros = torch.zeros_like(a[:, :, :1])
    a_prev = torch.cat([zeros, a[:, :, :-1]], dim=2)
    a_next = torch.cat([a[:, :, 1:], zeros], dim=2)
    seq = torch.stack([a_prev, r, a_next], dim=3).reshape(B, cr, 3 * T, H, W)
    hg = F.conv3d(seq, m.hourglass.weight.reshape(cr, 1, 3, 1, 1), stride=(3, 1, 1), groups=cr)   # (B, Cr, T, h, w)
    pooled = hg.mean(dim=(3, 4)).transpose(1, 2).reshape(B * T, cr)
    gate = 2.0 * torch.sigmoid(m.expand_norm(pooled @ m.expand.weight.T))
    expected = x * gate[:, None, :]
    assert torch.allclose(m(x, _ctx()), expected, atol=1e-12)


def test_neutral_context_is_identity():
    """Zero expansion weights: BN (train mode) of a constant 0 is β = 0, and 2·σ(0) = 1."""
    m = HourglassChannelGate(D).double()
    m.init_weights(4)
    with torch.no_grad():
        m.expand.weight.zero_()
    x = _tokens()
    assert torch.equal(m(x, _ctx()), x)


def test_gradients_reach_every_parameter():
    m = HourglassChannelGate(D)
    m.init_weights(4)
    x = torch.randn(B * T, H * W, D, requires_grad=True)
    (m(x, _ctx()) * torch.randn_like(x)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_init_weights_survives_generic_reinit():
    m = HourglassChannelGate(320)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.normal_(0, 0.02) if p.dim() > 1 else (p.fill_(1.0) if name.endswith("weight") else p.zero_())
        m.reduce_norm.weight.fill_(3.0)
    m.init_weights(4)
    for norm in (m.reduce_norm, m.expand_norm):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()
    std = (2.0 / (320 + 20)) ** 0.5                                    # Xavier-normal of the 1×1 reduction
    assert m.reduce.weight.std().item() == pytest.approx(std, rel=0.1)


@pytest.mark.parametrize("kwargs", [dict(reduction=0), dict(reduction=-4), dict(reduction=2.5), dict(reduction=True),
                                    dict(gate_scale=0), dict(gate_scale=-2.0), dict(gate_scale=float("inf"))])
def test_rejects_nonsense_arguments(kwargs):
    with pytest.raises(ValueError):
        HourglassChannelGate(D, **kwargs)
