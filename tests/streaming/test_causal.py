"""The causal side network (network.causal): no frame depends on later frames, and a stream processed a few frames
at a time with a TemporalHistory equals one offline call over all frames."""
from __future__ import annotations

import pytest
import torch

from side4video.config import load_config
from side4video.errors import ConfigError
from side4video.models import SideInputs, create_model
from side4video.models.side_network import shift_cls_causally
from side4video.modules import SIDE_MODULES, BlockContext, TemporalHistory, check_side_module_spec
from tests.models.test_side_network import TINY, TINY_EVA, randomise

CAUSAL_MODULES = [name for name in SIDE_MODULES.names() if SIDE_MODULES.get(name).has_causal_form]
B, F, N, W = 2, 7, 16, 48          # 32 px frames, 8 px patches → 16 patches; backbone width 48


def clip(seed: int = 0, frames: int = F, layers: int = TINY.num_layers) -> SideInputs:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(B, frames, 3, 32, 32, generator=generator)
    tokens = [torch.randn(B * frames, 1 + N, W, generator=generator) for _ in range(layers)]
    return SideInputs.from_tokens(pixels, tokens)


def frames_of(inputs: SideInputs, start: int, stop: int) -> SideInputs:
    """Frames [start, stop) of every clip, as their own SideInputs."""
    t = inputs.num_frames

    def rows(x):
        return x.reshape(B, t, *x.shape[1:])[:, start:stop].reshape(-1, *x.shape[1:])
    return SideInputs(inputs.frames[:, start:stop], [rows(c) for c in inputs.cls_tokens],
                      [rows(p) for p in inputs.patch_tokens], inputs.layers, None, stop - start)


def changed_after(inputs: SideInputs, t: int) -> SideInputs:
    """The same clips with every frame after t replaced (pixels and tokens)."""
    def change(x, per_frame_rows):
        x = x.clone().reshape(B, inputs.num_frames, *x.shape[per_frame_rows:])
        x[:, t + 1:] = torch.randn_like(x[:, t + 1:])
        return x
    return SideInputs(change(inputs.frames, 2), [change(c, 1).reshape(c.shape) for c in inputs.cls_tokens],
                      [change(p, 1).reshape(p.shape) for p in inputs.patch_tokens], inputs.layers, None,
                      inputs.num_frames)


def causal_model(family_info=TINY, **options):
    torch.manual_seed(0)
    return randomise(create_model("side4video", family_info, 5, side_dim=32, causal=True, **options)).eval()


MODULE_SETS = {name: dict(temporal_module=name) for name in CAUSAL_MODULES}
MODULE_SETS["tsm_cls+conv"] = dict(temporal_module="conv", side_modules=[
    {"type": "tsm", "slot": "post_attn", "shift_cls": True}, {"type": "tsm", "slot": "post_mlp", "blocks": [1]}])
MODULE_SETS["none"] = dict(temporal_module="none")


@pytest.mark.parametrize("name", CAUSAL_MODULES)
def test_every_module_with_a_causal_form_never_looks_ahead(name):
    torch.manual_seed(0)
    spec = check_side_module_spec({"type": name})
    module = SIDE_MODULES.build(spec, 32, provided={"causal": True}, reserved=("slot", "blocks")).eval()
    assert module.causal
    b, t, h, w = 2, 6, 3, 3
    x = torch.randn(b * t, h * w, 32)
    changed = x.clone().reshape(b, t, h * w, 32)
    changed[:, 3:] += torch.randn_like(changed[:, 3:])
    with torch.no_grad():
        out = module(x, BlockContext(grid=(b, t, h, w), index=0, depth=1, causal=True))
        out_changed = module(changed.reshape(x.shape), BlockContext(grid=(b, t, h, w), index=0, depth=1, causal=True))
    assert torch.equal(out.reshape(b, t, -1)[:, :3], out_changed.reshape(b, t, -1)[:, :3])
    assert not torch.equal(out.reshape(b, t, -1)[:, 3:], out_changed.reshape(b, t, -1)[:, 3:])


@pytest.mark.parametrize("family", [TINY, TINY_EVA], ids=["clip", "eva"])
@pytest.mark.parametrize("modules", MODULE_SETS, ids=list(MODULE_SETS))
def test_the_causal_network_frame_t_depends_only_on_frames_up_to_t(modules, family):
    model = causal_model(family, **MODULE_SETS[modules])
    assert model.causal
    data = clip(layers=len(model.blocks))
    with torch.no_grad():
        features = model.frame_features(data)
        for t in (0, 3):
            other = model.frame_features(changed_after(data, t))
            assert torch.equal(features[:, :t + 1], other[:, :t + 1]), f"frames <= {t} changed"
            assert not torch.allclose(features[:, t + 1:], other[:, t + 1:])


@pytest.mark.parametrize("modules", MODULE_SETS, ids=list(MODULE_SETS))
def test_a_stream_in_pieces_equals_one_offline_call(modules):
    """Frame by frame, and in pieces of 3, with one history store: the same per-frame features as all 7 at once."""
    model = causal_model(**MODULE_SETS[modules])
    data = clip(1)
    with torch.no_grad():
        offline = model.frame_features(data)
        for pieces in ([(i, i + 1) for i in range(F)], [(0, 3), (3, 6), (6, 7)]):
            store: dict[str, torch.Tensor] = {}
            streamed = torch.cat([model.frame_features(frames_of(data, a, b), TemporalHistory(store))
                                  for a, b in pieces], dim=1)
            torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)
        # a fresh store starts the stream again: frame 0 alone equals the offline frame 0
        again = model.frame_features(frames_of(data, 0, 1), TemporalHistory({}))
        torch.testing.assert_close(again, offline[:, :1], rtol=1e-5, atol=1e-5)


def test_the_causal_class_token_shift_takes_both_halves_from_the_past():
    cls = torch.arange(1, 2 * 4 * 6 + 1, dtype=torch.float32).reshape(2 * 4, 1, 6)
    out = shift_cls_causally(cls, 4).reshape(2, 4, 6)
    seq = cls.reshape(2, 4, 6)
    assert torch.equal(out[:, 0], torch.zeros(2, 6))
    assert torch.equal(out[:, 1, :3], seq[:, 0, :3]) and torch.equal(out[:, 1, 3:], torch.zeros(2, 3))
    assert torch.equal(out[:, 3, :3], seq[:, 2, :3]) and torch.equal(out[:, 3, 3:], seq[:, 1, 3:])


def test_window_logits_average_the_last_frames_then_classify():
    model = causal_model()
    features = torch.randn(B, 6, 32)
    logits = model.window_logits(features, window=4)
    for t in range(6):
        window = features[:, max(0, t - 3):t + 1].mean(dim=1)
        torch.testing.assert_close(logits[:, t], model.fc(window))
    # over a whole clip of T frames the last window is the clip's logits
    data = clip(2, frames=4)
    with torch.no_grad():
        torch.testing.assert_close(model.window_logits(model.frame_features(data), 4)[:, -1], model(data),
                                   rtol=1e-5, atol=1e-5)


def test_the_causal_stem_and_shift_keep_the_parameters_of_the_bidirectional_network():
    causal = create_model("side4video", TINY, 5, side_dim=32, causal=True)
    both = create_model("side4video", TINY, 5, side_dim=32)
    assert {k: v.shape for k, v in causal.state_dict().items()} == {k: v.shape for k, v in both.state_dict().items()}
    assert not both.causal


@pytest.mark.parametrize("change, message", [
    ({"network.temporal_module": "gc"}, "side module 'gc' has no causal form"),
    ({"network.side_modules": [{"type": "nonlocal"}]}, "side module 'nonlocal' has no causal form"),
    ({"network.head": "frame_avg"}, "network.causal applies to the side network"),
    ({"network.assembler": {"type": "cluster", "clusters": 4}}, "cannot be combined with network.assembler"),
])
def test_parts_without_a_causal_form_are_one_line_config_errors(change, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, {"data.num_classes": 4, "network.causal": True, **change})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="has no causal form"):
        create_model("side4video", TINY, 5, side_dim=32, causal=True, temporal_module="h2cn")


@pytest.mark.parametrize("modules", ["conv", "tsm_cls+conv"])
def test_causal_training_recomputes_exactly(modules):
    """network.recompute in the causal network: the same logits, gradients and running statistics as without."""
    lean = causal_model(**MODULE_SETS[modules], recompute=True).train()
    plain = create_model("side4video", TINY, 5, side_dim=32, causal=True, recompute=False, **MODULE_SETS[modules])
    plain.load_state_dict(lean.state_dict())
    plain.train()
    data = clip(4, frames=4)
    out_lean, out_plain = lean(data), plain(data)
    torch.testing.assert_close(out_lean, out_plain, rtol=1e-6, atol=1e-6)
    (out_lean ** 2).sum().backward()
    (out_plain ** 2).sum().backward()
    for (name, a), b in zip(lean.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), b in zip(lean.named_buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, msg=name)
