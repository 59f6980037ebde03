"""(2+1)D adapter: identity at init, the parameter-matched mid width and parameter count, and the factorised
receptive field (the spatial conv sees one frame, the temporal conv three)."""
from __future__ import annotations

import pytest
import torch

from side4video.errors import ConfigError
from side4video.modules import BlockContext, check_side_module_spec, create_side_module
from side4video.modules.r2plus1d import R2Plus1DAdapter, param_matched_mid_channels

B, T, H, W, D = 2, 6, 5, 5, 16


def _ctx(b=B, t=T, h=H, w=W) -> BlockContext:
    return BlockContext(grid=(b, t, h, w), index=0, depth=4)


def _tokens(seed=0, dtype=torch.float64, d=D) -> torch.Tensor:
    return torch.randn(B * T, H * W, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _formula(c_in: int, c_out: int, t: int = 3, d: int = 3) -> int:
    """Tran et al., eq. for M_i: floor(t·d²·N_{i−1}·N_i / (d²·N_{i−1} + t·N_i))."""
    return int((t * d ** 2 * c_in * c_out) // (d ** 2 * c_in + t * c_out))


def _perturbed(m: R2Plus1DAdapter, seed=0) -> R2Plus1DAdapter:
    """Non-zero last BN (γ, β) and random BN statistics, float64, eval mode."""
    torch.manual_seed(seed)
    m = m.double()
    with torch.no_grad():
        for norm in (m.spatial_norm, m.temporal_norm):
            norm.weight.normal_(1.0, 0.2)
            norm.bias.normal_(0.0, 0.2)
            norm.running_mean.normal_(0, 0.1)
            norm.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _generic_norm_init(m: torch.nn.Module) -> None:
    for mod in m.modules():
        if isinstance(mod, (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm)):
            torch.nn.init.ones_(mod.weight)
            torch.nn.init.zeros_(mod.bias)


def _video(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(B, T, H, W, -1).permute(0, 4, 1, 2, 3)


def test_defaults_and_registry():
    spec = check_side_module_spec({"type": "r2plus1d", "mid_channels": 32})
    assert spec["slot"] == "pre_attn" and spec["blocks"] == "all" and not R2Plus1DAdapter.causal
    with pytest.raises(ConfigError):
        check_side_module_spec({"type": "r2plus1d", "mid": 32})
    built = create_side_module(spec, 64, {"sync_bn": True, "drop_path": 0.2, "post_norm": True, "recompute": True})
    assert built.mid_channels == 32 and built.temporal_norm.sync and built.drop_path.drop_prob == 0.2


@pytest.mark.parametrize("dim,mid", [(320, 720), (64, 144), (16, 36), (30, 67), (512, 1152)])
def test_mid_channel_formula(dim, mid):
    assert _formula(dim, dim) == mid
    assert param_matched_mid_channels(dim, dim) == mid and R2Plus1DAdapter(dim).mid_channels == mid
    assert param_matched_mid_channels(64, 128) == _formula(64, 128)


@pytest.mark.parametrize("dim", [320, 64, 30])
def test_parameter_count_matches_the_3d_conv(dim):
    """The two convolutions together have the 3×3×3 conv's 27·C² weights (exactly when 4 | C, else fewer by less
    than one mid channel's 12·C); plus the two BNs' 2·M + 2·C."""
    m = R2Plus1DAdapter(dim)
    mid = _formula(dim, dim)
    conv = m.spatial.weight.numel() + m.temporal.weight.numel()
    assert m.spatial.weight.shape == (mid, dim, 1, 3, 3) and m.temporal.weight.shape == (dim, mid, 3, 1, 1)
    assert conv == 12 * dim * mid
    assert 27 * dim * dim - 12 * dim < conv <= 27 * dim * dim
    if dim % 4 == 0:
        assert conv == 27 * dim * dim
    assert sum(p.numel() for p in m.parameters()) == 12 * dim * mid + 2 * mid + 2 * dim


def test_mid_channels_override():
    m = R2Plus1DAdapter(64, mid_channels=8)
    assert m.spatial.weight.shape == (8, 64, 1, 3, 3)
    assert sum(p.numel() for p in m.parameters()) == 12 * 64 * 8 + 2 * 8 + 2 * 64


@pytest.mark.parametrize("train", [True, False])
def test_identity_at_init(train):
    m = R2Plus1DAdapter(D)
    m.init_weights(4)
    x = _tokens(dtype=torch.float32)
    out = m.train(train)(x, _ctx())
    assert out.shape == x.shape and torch.equal(out, x)


def test_init_weights_survives_generic_reinit():
    m = R2Plus1DAdapter(D)
    m.init_weights(4)
    _perturbed(m).float()
    _generic_norm_init(m)                       # the network's generic norm init ...
    x = _tokens(dtype=torch.float32)
    assert not torch.equal(m(x, _ctx()), x)
    m.init_weights(4)                           # ... then the module's own: identity again
    assert torch.equal(m(x, _ctx()), x) and torch.equal(m.train()(x, _ctx()), x)
    assert torch.equal(m.spatial_norm.weight, torch.ones(m.mid_channels))


@pytest.mark.parametrize("t0", [0, 2, T - 1])
def test_receptive_fields(t0):
    """Perturb one token (t0, i0, j0) of clip 0 (eval mode): the spatial conv's output changes only in frame t0,
    at the 3×3 neighbours; the whole branch changes in frames t0−1..t0+1 (clipped at the ends: zero padding),
    at the same 3×3 neighbours, and everywhere there. Clip 1 never changes."""
    m = R2Plus1DAdapter(D)
    m.init_weights(4)
    m = _perturbed(m)
    i0, j0 = 1, 3
    x = _video(_tokens())
    x2 = x.clone()
    x2[0, :, t0, i0, j0] += 1.0
    window = torch.zeros(H, W, dtype=torch.bool)
    window[max(i0 - 1, 0):i0 + 2, max(j0 - 1, 0):j0 + 2] = True
    with torch.no_grad():
        s_changed = (m.spatial_features(x2) - m.spatial_features(x)).abs() > 1e-10        # (B, M, T, h, w)
        b_changed = (m.branch(x2) - m.branch(x)).abs() > 1e-10
    spatial_expected = torch.zeros(T, H, W, dtype=torch.bool)
    spatial_expected[t0] = window
    assert torch.equal(s_changed[0].any(dim=0), spatial_expected) and not s_changed[1].any()
    branch_expected = torch.zeros(T, H, W, dtype=torch.bool)
    branch_expected[max(t0 - 1, 0):t0 + 2] = window
    assert torch.equal(b_changed[0].any(dim=0), branch_expected) and not b_changed[1].any()
    assert torch.equal(b_changed[0].all(dim=0), branch_expected)        # every output channel, generic weights


def test_gradients_reach_every_parameter():
    """At init only the zero-initialised last BN gets a gradient; once its γ ≠ 0 every parameter does."""
    m = R2Plus1DAdapter(D)
    m.init_weights(4)
    x = _tokens(dtype=torch.float32).requires_grad_()
    (m(x, _ctx()) * torch.randn_like(x)).sum().backward()
    assert m.temporal_norm.weight.grad.abs().sum() > 0 and m.temporal_norm.bias.grad.abs().sum() > 0
    with torch.no_grad():
        m.temporal_norm.weight.fill_(1.0)
    m.zero_grad()
    (m(x, _ctx()) * torch.randn_like(x)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kwargs", [dict(mid_channels=0), dict(mid_channels=-3), dict(mid_channels=2.5),
                                    dict(mid_channels=True), dict(drop_path=1.5), dict(drop_path=-0.5)])
def test_rejects_nonsense_arguments(kwargs):
    with pytest.raises(ValueError):
        R2Plus1DAdapter(D, **kwargs)


def test_rejects_zero_width():
    with pytest.raises(ValueError):
        R2Plus1DAdapter(0)
