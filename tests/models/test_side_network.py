"""The Side4Video side network: paper parameter counts, shapes, the cls shift, attention, init, temporal-ness."""
from __future__ import annotations

import pytest
import torch

from side4video.backbones import describe_backbone
from side4video.backbones.frozen import BackboneInfo
from side4video.models import SideInputs, count_parameters, create_model, shift_cls_in_time
from side4video.models.side_network import SideAttention, default_num_heads
from side4video.modules import SideModule, residual_init_std
from tests.models.official_reference import official_clip_logits, official_eva_logits, to_official_layout

TINY = BackboneInfo(arch="tiny", family="clip", width=48, num_layers=4, patch_size=8, image_size=32, embed_dim=24,
                    weights=None, weights_format=None, quick_gelu=False)
TINY_EVA = BackboneInfo(arch="tiny-eva", family="eva", width=48, num_layers=4, patch_size=8, image_size=32,
                        embed_dim=24, weights=None, weights_format=None, quick_gelu=False)


def inputs(frames, tokens, embedding=None):
    return SideInputs.from_tokens(frames, tokens, embedding)


def randomise(model, seed=0):
    """Non-trivial values everywhere (norms, biases, running statistics), so a wrong formula shows up."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=generator)
                tensor.copy_(tensor.abs() + 0.5 + 0.1 * noise if name.endswith("running_var") else
                             tensor + 0.1 * noise)
    return model


def _meta_model(arch: str, side_dim: int, num_classes: int = 174):
    with torch.device("meta"):
        return create_model("side4video", describe_backbone(arch), num_classes, side_dim=side_dim)


@pytest.mark.parametrize("arch,side_dim,paper_millions", [("ViT-B/16", 320, 21.1), ("ViT-L/14", 512, 102.1)])
def test_trainable_parameters_match_the_paper(arch, side_dim, paper_millions):
    """Table 2 of the paper: 21M (B/16, D=320) and 102M (L/14, D=512) tunable parameters on SSv2 (174 classes)."""
    params = count_parameters(_meta_model(arch, side_dim))
    assert params == pytest.approx(paper_millions * 1e6, rel=0.01)


def test_light_variant_is_much_smaller():
    full, light = count_parameters(_meta_model("ViT-B/16", 320)), count_parameters(_meta_model("ViT-B/16", 128))
    assert light < full / 4 and light == pytest.approx(4.3e6, rel=0.05)


def test_eva_bigE_trainable_parameters_match_the_official_count():
    """The official EVA02-CLIP-bigE-14 model (D=576, 174 classes) has 183,373,806 trainable parameters, including
    the stem conv's bias of 576 that this toolkit drops as redundant before BatchNorm."""
    assert count_parameters(_meta_model("EVA02-CLIP-bigE-14", 576)) == 183_373_806 - 576


def test_side_blocks_follow_the_backbone_family():
    clip = _meta_model("ViT-B/16", 320)
    assert clip.backbone_layers == list(range(12)) and not clip.blocks[0].post_norm
    assert clip.taps[0].norm_position == "input" and clip.head_norm is not None
    eva = _meta_model("EVA02-L-14", 512)
    assert eva.backbone_layers == list(range(1, 24, 2)) and eva.blocks[0].post_norm
    assert eva.taps[0].norm_position == "output" and eva.taps[0].norm.normalized_shape == (512,)
    assert eva.head_norm is None
    assert default_num_heads(320) == 5 and default_num_heads(512) == 8 and 224 % default_num_heads(224) == 0


def test_shapes_and_a_backward_pass():
    model = create_model("side4video", TINY, 7, side_dim=32)
    frames = torch.randn(2, 4, 3, 32, 32)
    tokens = [torch.randn(8, 17, 48, requires_grad=False) for _ in range(4)]
    assert model.forward_features(inputs(frames, tokens)).shape == (2, 32)
    logits = model(inputs(frames, tokens))
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="4 backbone layers"):
        model(inputs(frames, tokens[:3]))


def test_cls_shift_moves_half_the_channels_each_way_with_zero_ends():
    b, t, d = 2, 4, 6
    cls = torch.arange(b * t * d, dtype=torch.float32).reshape(b * t, 1, d)
    shifted = shift_cls_in_time(cls, t).reshape(b, t, d)
    seq = cls.reshape(b, t, d)
    assert torch.equal(shifted[:, :-1, :3], seq[:, 1:, :3])     # first half from t+1
    assert torch.equal(shifted[:, -1, :3], torch.zeros(b, 3))
    assert torch.equal(shifted[:, 1:, 3:], seq[:, :-1, 3:])     # second half from t-1
    assert torch.equal(shifted[:, 0, 3:], torch.zeros(b, 3))


def test_attention_queries_are_patches_and_keys_include_cls():
    torch.manual_seed(0)
    attention = SideAttention(16, 2)
    tokens = torch.randn(3, 1 + 5, 16)
    out = attention(tokens)
    assert out.shape == (3, 5, 16)
    changed = tokens.clone()
    changed[:, 0] += 1.0
    assert not torch.allclose(attention(changed), out), "the cls token must act as a key/value"
    q, k, v = attention.qkv(tokens).chunk(3, dim=-1)
    def heads(x):
        return x.reshape(3, -1, 2, 8).transpose(1, 2)

    weights = torch.softmax(heads(q)[:, :, 1:] @ heads(k).transpose(-1, -2) / 8 ** 0.5, dim=-1)
    manual = attention.proj((weights @ heads(v)).transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(out, manual, rtol=1e-5, atol=1e-5)


def test_side_network_sees_frame_order_and_frame_average_does_not():
    torch.manual_seed(0)
    frames = torch.randn(2, 4, 3, 32, 32)
    tokens = [torch.randn(8, 17, 48) for _ in range(4)]
    embedding = torch.randn(8, 24)
    reverse = torch.arange(3, -1, -1)
    reversed_tokens = [t.reshape(2, 4, 17, 48)[:, reverse].reshape(8, 17, 48) for t in tokens]
    side = create_model("side4video", TINY, 5, side_dim=32).eval()
    reversed_logits = side(inputs(frames[:, reverse], reversed_tokens))
    assert not torch.allclose(side(inputs(frames, tokens)), reversed_logits, atol=1e-4)
    probe = create_model("frame_avg", TINY, 5).eval()
    reversed_embedding = embedding.reshape(2, 4, 24)[:, reverse].reshape(8, 24)
    torch.testing.assert_close(probe(inputs(frames, [], embedding)),
                               probe(inputs(frames[:, reverse], [], reversed_embedding)))
    transformer = create_model("temporal_transformer", TINY, 5, num_frames=4, layers=1).eval()
    assert transformer(inputs(frames, [], embedding)).shape == (2, 5)


def test_initialisation_is_depth_aware_and_covers_the_temporal_convs():
    torch.manual_seed(0)
    shallow = create_model("side4video", TINY, 5, side_dim=64, layers=[3])
    deep = create_model("side4video", TINY, 5, side_dim=64, layers="all")
    for model in (shallow, deep):
        expected = residual_init_std(64, len(model.blocks))
        block = model.blocks[0]
        temporal = block.pre_attn[0]
        assert block.attn.proj.weight.std().item() == pytest.approx(expected, rel=0.15)
        assert temporal.pw_conv2.weight.std().item() == pytest.approx(expected, rel=0.15)
        assert temporal.pw_conv1.weight.std().item() == pytest.approx(64 ** -0.5, rel=0.15)
        assert torch.count_nonzero(temporal.pw_conv1.bias) == 0
        assert block.mlp.fc1.weight.std().item() == pytest.approx(128 ** -0.5, rel=0.15)
    assert residual_init_std(64, 4) < residual_init_std(64, 1)
    assert model.pos_embed.std().item() == pytest.approx(0.01, rel=0.2)


@pytest.mark.parametrize("family", ["clip", "eva"])
def test_the_side_network_computes_the_official_formulas(family):
    """Same weights → the same logits as the reference forward written from the official code's equations
    (CLIP: LayerNorm(W) → Linear taps, pre-norm blocks, BN before pooling; EVA: Linear → LayerNorm(D) taps,
    post-norm blocks, no BN before pooling). Also pins the default (conv) block to what it computed before the
    side-module interface existed."""
    torch.manual_seed(0)
    info = TINY if family == "clip" else TINY_EVA
    model = randomise(create_model("side4video", info, 7, side_dim=64)).eval()
    frames = torch.randn(2, 4, 3, 32, 32)
    tokens = [torch.randn(8, 17, 48) for _ in model.backbone_layers]
    official = to_official_layout(model.state_dict(), family, stem_bias=torch.randn(64) * 0.1)
    reference = official_clip_logits if family == "clip" else official_eva_logits
    expected = reference(official, frames, tokens, patch=8)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs(frames, tokens)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["clip", "eva"])
def test_recomputation_changes_neither_logits_nor_gradients(family):
    """network.recompute (norms, GELU, the depthwise conv and the tap LayerNorm recomputed in backward)."""
    torch.manual_seed(0)
    info = TINY if family == "clip" else TINY_EVA
    lean = randomise(create_model("side4video", info, 5, side_dim=32, recompute=True))
    plain = create_model("side4video", info, 5, side_dim=32, recompute=False)
    plain.load_state_dict(lean.state_dict())
    frames = torch.randn(2, 4, 3, 32, 32)
    tokens = [torch.randn(8, 17, 48) for _ in lean.backbone_layers]
    out_lean, out_plain = lean(inputs(frames, tokens)), plain(inputs(frames, tokens))
    torch.testing.assert_close(out_lean, out_plain, rtol=1e-6, atol=1e-6)
    (out_lean ** 2).sum().backward()
    (out_plain ** 2).sum().backward()
    for (name, a), b in zip(lean.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), b in zip(lean.named_buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, msg=f"{name}: running statistics are updated exactly once")


def test_bf16_taps_and_autocast_stay_close_to_fp32():
    """Taps handed over in bf16 and the side network under bf16 autocast (fp32 master weights) give the fp32
    logits within 5e-2 (relative to their scale) and gradients of the same direction."""
    torch.manual_seed(0)
    model = create_model("side4video", TINY, 5, side_dim=32)
    frames = torch.randn(2, 4, 3, 32, 32)
    tokens = [torch.randn(8, 17, 48) for _ in range(4)]
    reference = model(inputs(frames, tokens))
    reference.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(inputs(frames, [t.bfloat16() for t in tokens]))
    low.float().sum().backward()
    scale = reference.abs().max()
    assert (low.float() - reference).abs().max() <= 5e-2 * scale
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    # (some gradients are exactly zero in exact arithmetic, e.g. attention key biases: compare the whole vector)
    full = torch.cat([g.flatten() for g in grads])
    low_grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.nn.functional.cosine_similarity(full, low_grads, dim=0) > 0.99


def test_gradient_checkpointing_gives_the_same_result():
    torch.manual_seed(0)
    plain = create_model("side4video", TINY, 5, side_dim=32, drop_path=0.0)
    checkpointed = create_model("side4video", TINY, 5, side_dim=32, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    frames = torch.randn(2, 4, 3, 32, 32)
    tokens = [torch.randn(8, 17, 48) for _ in range(4)]
    out_plain, out_ckpt = plain(inputs(frames, tokens)), checkpointed(inputs(frames, tokens))
    torch.testing.assert_close(out_plain, out_ckpt)
    out_plain.sum().backward()
    out_ckpt.sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    # the recomputation in backward does not move the BatchNorm running statistics a second time
    for (name, a), b in zip(plain.named_buffers(), checkpointed.buffers()):
        torch.testing.assert_close(a, b, msg=name)
    assert all(int(b) == 1 for n, b in checkpointed.named_buffers() if n.endswith("num_batches_tracked"))


def test_temporal_modules_are_pluggable():
    for name in ("conv", "tsm", "none"):
        model = create_model("side4video", TINY, 5, side_dim=32, temporal_module=name)
        assert model(inputs(torch.randn(1, 4, 3, 32, 32), [torch.randn(4, 17, 48)] * 4)).shape == (1, 5)
        assert len(model.blocks[0].pre_attn) == (0 if name == "none" else 1)
    from side4video.errors import ConfigError
    with pytest.raises(Exception, match="unknown side module 'lstm'"):
        create_model("side4video", TINY, 5, side_dim=32, temporal_module="lstm")
    with pytest.raises(ConfigError, match=r"names blocks \[7\], but the side network has 4 blocks"):
        create_model("side4video", TINY, 5, side_dim=32, side_modules=[{"type": "tsm", "blocks": [7]}])


def test_module_placement_slots_blocks_and_order():
    model = create_model("side4video", TINY, 5, side_dim=32, temporal_module="conv",
                         side_modules=[{"type": "tsm", "slot": "post_mlp", "blocks": 2},
                                       {"type": "tsm", "slot": "pre_attn", "blocks": [0, -1], "online": True}])
    kinds = [[type(m).__name__ for m in block.pre_attn] for block in model.blocks]
    assert kinds == [["TemporalConv", "TemporalShift"], ["TemporalConv"], ["TemporalConv"],
                     ["TemporalConv", "TemporalShift"]]
    assert [len(block.post_mlp) for block in model.blocks] == [0, 1, 0, 1]
    assert model.blocks[0].pre_attn[1].online and not model.blocks[1].post_mlp[0].online


class ZeroGate(SideModule):
    """A test module whose own init zeroes its norm (as the non-local / (2+1)D modules zero theirs); named in the
    configs below as a user's own module (``package.module:Class``)."""
    causal = True
    default_slot = "post_attn"
    default_blocks = "all"

    def __init__(self, dim: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, x, ctx):
        return x + self.norm(x)

    def init_weights(self, depth: int) -> None:
        torch.nn.init.zeros_(self.norm.weight)
        torch.nn.init.zeros_(self.norm.bias)


ZERO_GATE = f"{__name__}:ZeroGate"


def test_a_modules_own_init_runs_after_the_generic_init():
    model = create_model("side4video", TINY, 5, side_dim=32, side_modules=[{"type": ZERO_GATE}])
    gates = [block.post_attn[0] for block in model.blocks]
    assert all(torch.count_nonzero(g.norm.weight) == 0 for g in gates), "the generic norm init overwrote it"
    assert torch.all(model.blocks[0].attn_norm.weight == 1)
    assert not model.causal   # the default conv looks at the next frame
    # a module that declares itself causal does not make the network causal: the stem and the class-token shift
    # look ahead unless the network is built causal (tests/streaming/test_causal.py)
    assert not create_model("side4video", TINY, 5, side_dim=32, temporal_module="none",
                            side_modules=[{"type": ZERO_GATE}]).causal


def test_unknown_head():
    with pytest.raises(ValueError, match="unknown head 'xclip'"):
        create_model("xclip", TINY, 5)


@pytest.mark.slow
def test_compiled_side_network_equals_eager(grad_checkpointing=True):
    """network.compile: torch.compile traces the recompute regions and checkpoints as plain code (its partitioner
    chooses what to keep), and computes the eager model's logits and gradients; statistics move once a step.
    (With checkpointing on, both the block checkpoints and the recomputed linears inside them are traced.)"""
    torch.manual_seed(0)
    eager = create_model("side4video", TINY, 5, side_dim=32, drop_path=0.0, grad_checkpointing=grad_checkpointing)
    compiled = create_model("side4video", TINY, 5, side_dim=32, drop_path=0.0, grad_checkpointing=grad_checkpointing)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    frames = torch.randn(2, 4, 3, 32, 32)
    tokens = [torch.randn(8, 17, 48) for _ in range(4)]
    out_eager, out_compiled = eager(inputs(frames, tokens)), compiled(inputs(frames, tokens))
    torch.testing.assert_close(out_compiled, out_eager, rtol=1e-4, atol=1e-5)
    out_eager.square().sum().backward()
    out_compiled.square().sum().backward()
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)
    for (name, a), b in zip(eager.named_buffers(), compiled.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
