"""TSM side module: exact channel movement, zero boundaries, the causal online variant, the class-token option."""
from __future__ import annotations

import pytest
import torch

from side4video.modules import BlockContext, check_side_module_spec
from side4video.modules.tsm import TemporalShift, temporal_shift

B, T, N, D = 2, 5, 4, 20          # fold = 20 // 8 = 2: channels 0-1 and 2-3 move, 4-19 stay


def _ctx(cls: torch.Tensor | None = None) -> BlockContext:
    return BlockContext(grid=(B, T, 2, 2), index=0, depth=4, cls=cls)


def _coded() -> torch.Tensor:
    """x[b, t, n, c] = 1000·b + 100·(t + 1) + c + n/10: every value says where it came from (never 0)."""
    b, t, n, c = torch.meshgrid(torch.arange(B), torch.arange(T), torch.arange(N), torch.arange(D), indexing="ij")
    return (1000.0 * b + 100.0 * (t + 1) + c + n / 10).double().reshape(B * T, N, D)


def _eval_module(**kwargs) -> TemporalShift:
    """Eval mode with random BN statistics and affine parameters (so BN(x) is a fixed per-channel affine map)."""
    torch.manual_seed(0)
    m = TemporalShift(D, **kwargs).double()
    m.init_weights(4)
    with torch.no_grad():
        m.norm.weight.normal_(1.0, 0.3)
        m.norm.bias.normal_(0.0, 0.3)
        m.norm.running_mean.normal_(0.0, 0.5)
        m.norm.running_var.uniform_(0.5, 2.0)
    return m.eval()


def test_bidirectional_channel_movement():
    x = _coded()
    out = temporal_shift(x, T).reshape(B, T, N, D)
    seq = x.reshape(B, T, N, D)
    fold = D // 8
    assert torch.equal(out[:, :-1, :, :fold], seq[:, 1:, :, :fold])                  # from t+1
    assert torch.equal(out[:, 1:, :, fold:2 * fold], seq[:, :-1, :, fold:2 * fold])  # from t−1
    assert torch.equal(out[..., 2 * fold:], seq[..., 2 * fold:])                     # stay
    assert not out[:, -1, :, :fold].any() and not out[:, 0, :, fold:2 * fold].any()  # zeros at the ends
    assert (out[:, :-1, :, :fold] != 0).all() and (out[:, 1:, :, fold:2 * fold] != 0).all()   # nothing else is 0
    assert torch.equal(out.reshape(B * T, N, D)[T:], temporal_shift(x[T:], T))      # never across clips


def test_online_channel_movement():
    """Online: 2/8 of the channels come from t−1 only, zeros at t = 0, nothing from t+1."""
    x = _coded()
    out = temporal_shift(x, T, online=True).reshape(B, T, N, D)
    seq = x.reshape(B, T, N, D)
    fold = D // 8
    assert torch.equal(out[:, 1:, :, :2 * fold], seq[:, :-1, :, :2 * fold])
    assert not out[:, 0, :, :2 * fold].any()
    assert torch.equal(out[..., 2 * fold:], seq[..., 2 * fold:])


@pytest.mark.parametrize("online", [False, True])
def test_module_is_residual_shift_of_the_normalised_stream(online):
    """x + shift(BN(x)): the shifted channels of the branch carry the neighbour's normalised values."""
    m = _eval_module(online=online)
    x = _coded()
    branch = (m(x, _ctx()) - x).reshape(B, T, N, D)
    normed = m.norm(x).reshape(B, T, N, D)
    assert torch.allclose(branch.reshape(x.shape), temporal_shift(m.norm(x), T, online=online), atol=1e-12)
    fold = D // 8
    if online:
        assert torch.allclose(branch[:, 1:, :, :2 * fold], normed[:, :-1, :, :2 * fold], atol=1e-12)
        assert not branch[:, 0, :, :2 * fold].any()
    else:
        assert torch.allclose(branch[:, :-1, :, :fold], normed[:, 1:, :, :fold], atol=1e-12)
        assert not branch[:, -1, :, :fold].any() and not branch[:, 0, :, fold:2 * fold].any()
    assert torch.allclose(branch[..., 2 * fold:], normed[..., 2 * fold:], atol=1e-12)


@pytest.mark.parametrize("t0", range(T - 1))
def test_online_is_causal_in_eval_mode(t0):
    """Eval mode: perturbing frames after t0 leaves the outputs at frames ≤ t0 unchanged (online), while the
    bi-directional shift does look ahead. (Train mode is not tested for causality: BatchNorm then normalises
    with the statistics of the whole batch, future frames included; see the next test.)"""
    x = torch.randn(B * T, N, D, dtype=torch.float64)
    x2 = x.reshape(B, T, N, D).clone()
    x2[:, t0 + 1:] += torch.randn_like(x2[:, t0 + 1:])
    x2 = x2.reshape(x.shape)
    online = _eval_module(online=True)
    assert online.causal and not TemporalShift(D).causal
    past = lambda y: y.reshape(B, T, N, D)[:, :t0 + 1]                  # noqa: E731
    assert torch.equal(past(online(x, _ctx())), past(online(x2, _ctx())))
    bidirectional = _eval_module()
    assert not torch.equal(past(bidirectional(x, _ctx())), past(bidirectional(x2, _ctx())))


def test_train_mode_batchnorm_is_not_causal():
    m = _eval_module(online=True).train()
    x = torch.randn(B * T, N, D, dtype=torch.float64)
    x2 = x.reshape(B, T, N, D).clone()
    x2[:, -1] += 5.0
    y, y2 = m(x, _ctx()), m(x2.reshape(x.shape), _ctx())
    assert not torch.allclose(y.reshape(B, T, N, D)[:, 0], y2.reshape(B, T, N, D)[:, 0])


@pytest.mark.parametrize("online", [False, True])
def test_shift_cls(online):
    x = torch.randn(B * T, N, D)
    cls = torch.randn(B * T, 1, D)
    ctx = _ctx(cls)
    TemporalShift(D, online=online, shift_cls=True)(x, ctx)
    assert torch.equal(ctx.cls, temporal_shift(cls, T, online=online))
    ctx = _ctx(cls)
    TemporalShift(D, online=online)(x, ctx)                                # default: the class token is untouched
    assert ctx.cls is cls
    assert TemporalShift(D, shift_cls=True)(x, _ctx(None)).shape == x.shape   # no class token: nothing to shift


def test_shape_gradients_and_registry():
    m = TemporalShift(D)
    m.init_weights(4)
    x = torch.randn(B * T, N, D, requires_grad=True)
    out = m(x, _ctx())
    assert out.shape == x.shape
    (out * torch.randn_like(out)).sum().backward()
    assert m.norm.weight.grad.abs().sum() > 0 and m.norm.bias.grad.abs().sum() > 0 and x.grad is not None
    spec = check_side_module_spec({"type": "tsm", "online": True})
    assert spec["slot"] == "pre_attn" and spec["blocks"] == "all"


def test_init_weights_sets_the_identity_norm():
    """(That a module's own init runs after the network's generic init: tests/models/test_side_network.py.)"""
    m = TemporalShift(D)
    with torch.no_grad():        # whatever a generic init left there
        m.norm.weight.fill_(3.0)
        m.norm.bias.fill_(1.0)
    m.init_weights(4)
    assert torch.equal(m.norm.weight, torch.ones(D)) and not m.norm.bias.any()


@pytest.mark.parametrize("fold_div", [1, 0, -8])
def test_rejects_nonsense_fold_div(fold_div):
    with pytest.raises(ValueError):
        TemporalShift(D, fold_div=fold_div)
