"""Non-local side module: exactly the identity at init, all-to-all space-time mixing, the sub-sampled key count, and
the embedded-Gaussian formula (raw dot product, no 1/√d)."""
from __future__ import annotations

import pytest
import torch

from side4video.errors import ConfigError
from side4video.modules import BlockContext, check_side_module_spec, create_side_module, resolve_blocks
from side4video.modules.nonlocal_block import NonLocalBlock

B, T, H, W, D = 2, 4, 4, 4, 16


def _ctx(b=B, t=T, h=H, w=W) -> BlockContext:
    return BlockContext(grid=(b, t, h, w), index=1, depth=4)


def _tokens(seed=0, b=B, t=T, h=H, w=W, d=D, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(b * t, h * w, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _perturbed(m: NonLocalBlock, seed=0, std=0.3) -> NonLocalBlock:
    """Random projections and a non-zero output BN (γ, β and running statistics), float64, eval mode."""
    torch.manual_seed(seed)
    m = m.double()
    with torch.no_grad():
        for linear in (m.theta, m.phi, m.g, m.out):
            linear.weight.normal_(0, std)
            linear.bias.normal_(0, 0.1)
        m.norm.weight.normal_(1.0, 0.2)
        m.norm.bias.normal_(0, 0.2)
        m.norm.running_mean.normal_(0, 0.1)
        m.norm.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _generic_norm_init(m: torch.nn.Module) -> None:
    for mod in m.modules():
        if isinstance(mod, (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm)):
            torch.nn.init.ones_(mod.weight)
            torch.nn.init.zeros_(mod.bias)


def test_defaults_and_registry():
    assert NonLocalBlock.default_slot == "post_attn" and NonLocalBlock.default_blocks == 2
    assert not NonLocalBlock.causal
    spec = check_side_module_spec({"type": "nonlocal", "sub_sample": False})
    assert spec["slot"] == "post_attn" and spec["blocks"] == 2
    assert resolve_blocks(spec["blocks"], 12) == [1, 3, 5, 7, 9, 11] and resolve_blocks(spec["blocks"], 4) == [1, 3]
    with pytest.raises(ConfigError):
        check_side_module_spec({"type": "nonlocal", "subsample": False})
    built = create_side_module(spec, 32, {"sync_bn": True, "drop_path": 0.1, "post_norm": False, "recompute": True})
    assert built.inner == 16 and not built.sub_sample and built.norm.sync and built.drop_path.drop_prob == 0.1


@pytest.mark.parametrize("train", [True, False])
def test_identity_at_init(train):
    m = NonLocalBlock(D)
    m.init_weights(4)
    m.train(train)
    x = _tokens(dtype=torch.float32)
    out = m(x, _ctx())
    assert out.shape == x.shape and torch.equal(out, x)


def test_init_weights_survives_generic_reinit():
    """The network's generic norm init (γ = 1, β = 0) runs before init_weights: the block is the identity again."""
    m = NonLocalBlock(D)
    _perturbed(m).float()
    _generic_norm_init(m)
    x = _tokens(dtype=torch.float32)
    assert not torch.equal(m.train()(x, _ctx()), x)
    m.init_weights(4)
    assert torch.equal(m(x, _ctx()), x)
    assert m.theta.weight.std().item() == pytest.approx(0.01, rel=0.2) and not m.theta.bias.any()


def test_mixes_all_positions_in_space_and_time():
    """Perturb one token of clip 0: every output token of clip 0 changes (every query attends to every key,
    all frames and all positions), clip 1 does not (eval mode: BN statistics do not mix the batch)."""
    m = _perturbed(NonLocalBlock(D), std=0.1)                           # a softmax far from one-hot
    x = _tokens()
    y = m(x, _ctx())
    x2 = x.clone()
    x2[2, 5] += 1.0                                                      # clip 0, frame 2, position (1, 1)
    y2 = m(x2, _ctx())
    change = (y2 - y).abs().amax(dim=-1).reshape(B, T, H * W)
    assert (change[0] > 1e-8).all()
    assert torch.equal(y2[T:], y[T:])


@pytest.mark.parametrize("h,w,sub_sample,keys", [(4, 4, True, 4), (5, 5, True, 4), (4, 6, True, 6), (1, 4, True, 2),
                                                 (3, 1, True, 1), (1, 1, True, 1), (4, 4, False, 16)])
def test_subsampled_key_count(h, w, sub_sample, keys):
    """MaxPool (1, 2, 2) on φ and g (floor: an odd last row/column is dropped; an axis of size 1 is not pooled);
    the queries keep the full T·h·w resolution."""
    m = NonLocalBlock(D, sub_sample=sub_sample).double()
    m.init_weights(4)
    ctx = _ctx(h=h, w=w)
    x = _tokens(h=h, w=w)
    key, value = m.keys_values(x, ctx)
    assert key.shape == value.shape == (B, T * keys, D // 2)
    assert m(x, ctx).shape == x.shape


def test_matches_manual_embedded_gaussian():
    """y_i = Σ_j softmax_j(θ_iᵀ φ_j) g_j over the 2×2 max-pooled keys of the whole clip, z = BN(W_z y) + x."""
    m = _perturbed(NonLocalBlock(D), std=0.2)
    x = _tokens()
    c = D // 2
    seq = x.reshape(B, T, H, W, D)
    theta = seq @ m.theta.weight.T + m.theta.bias

    def pooled(linear):
        p = seq @ linear.weight.T + linear.bias                         # (B, T, H, W, C')
        return p.reshape(B, T, H // 2, 2, W // 2, 2, c).amax(dim=(3, 5)).reshape(B, -1, c)

    phi, g = pooled(m.phi), pooled(m.g)
    attn = torch.softmax(theta.reshape(B, -1, c) @ phi.transpose(1, 2), dim=-1)   # no 1/sqrt(C') scale
    y = (attn @ g) @ m.out.weight.T + m.out.bias
    bn = (y - m.norm.running_mean) / torch.sqrt(m.norm.running_var + m.norm.eps) * m.norm.weight + m.norm.bias
    expected = bn.reshape(x.shape) + x
    assert torch.allclose(m(x, _ctx()), expected, atol=1e-10)
    scaled = torch.softmax(theta.reshape(B, -1, c) @ phi.transpose(1, 2) / c ** 0.5, dim=-1)
    assert not torch.allclose(attn, scaled, atol=1e-3)                  # the scale matters for this check


def test_gradients_reach_every_parameter():
    """At init only the zero-initialised BN gets a gradient (its γ = 0 blocks the rest); once γ ≠ 0 all do."""
    m = NonLocalBlock(D)
    m.init_weights(4)
    x = _tokens(dtype=torch.float32).requires_grad_()
    (m(x, _ctx()) * torch.randn_like(x)).sum().backward()
    assert m.norm.weight.grad.abs().sum() > 0 and m.norm.bias.grad.abs().sum() > 0
    with torch.no_grad():
        m.norm.weight.fill_(1.0)
    m.zero_grad()
    (m(x, _ctx()) * torch.randn_like(x)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kwargs", [dict(reduction=0), dict(reduction=-2), dict(reduction=1.5), dict(reduction=32),
                                    dict(sub_sample="yes"), dict(drop_path=1.0), dict(drop_path=-0.1)])
def test_rejects_nonsense_arguments(kwargs):
    with pytest.raises(ValueError):
        NonLocalBlock(D, **kwargs)
