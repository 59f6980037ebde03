"""The Side4Video side network: paper parameter counts, shapes, the cls shift, attention, init, temporal-ness."""
from __future__ import annotations

import pytest
import torch

from side4video.backbones import describe_backbone
from side4video.backbones.frozen import BackboneInfo
from side4video.models import count_parameters, create_model, shift_cls_in_time
from side4video.models.side_network import SideAttention, default_num_heads
from side4video.modules import residual_init_std, temporal_shift

TINY = BackboneInfo(arch="tiny", family="clip", width=48, num_layers=4, patch_size=8, image_size=32, embed_dim=24,
                    weights=None, weights_format=None, quick_gelu=False)


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


def test_side_blocks_follow_the_backbone_family():
    clip = _meta_model("ViT-B/16", 320)
    assert clip.backbone_layers == list(range(12)) and not clip.blocks[0].post_norm
    eva = _meta_model("EVA02-L-14", 512)
    assert eva.backbone_layers == list(range(1, 24, 2)) and eva.blocks[0].post_norm
    assert default_num_heads(320) == 5 and default_num_heads(512) == 8 and 224 % default_num_heads(224) == 0


def test_shapes_and_a_backward_pass():
    model = create_model("side4video", TINY, 7, side_dim=32)
    frames = torch.randn(2, 4, 3, 32, 32)
    tokens = [torch.randn(8, 17, 48, requires_grad=False) for _ in range(4)]
    assert model.forward_features(frames, tokens).shape == (2, 32)
    logits = model(frames, tokens)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="4 backbone layers"):
        model(frames, tokens[:3])


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
    heads = lambda x: x.reshape(3, -1, 2, 8).transpose(1, 2)
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
    assert not torch.allclose(side(frames, tokens), side(frames[:, reverse], reversed_tokens), atol=1e-4)
    probe = create_model("frame_avg", TINY, 5).eval()
    reversed_embedding = embedding.reshape(2, 4, 24)[:, reverse].reshape(8, 24)
    torch.testing.assert_close(probe(frames, (), embedding), probe(frames[:, reverse], (), reversed_embedding))
    transformer = create_model("temporal_transformer", TINY, 5, num_frames=4, layers=1).eval()
    assert transformer(frames, (), embedding).shape == (2, 5)


def test_initialisation_is_depth_aware_and_covers_the_temporal_convs():
    torch.manual_seed(0)
    shallow = create_model("side4video", TINY, 5, side_dim=64, layers=[3])
    deep = create_model("side4video", TINY, 5, side_dim=64, layers="all")
    for model in (shallow, deep):
        expected = residual_init_std(64, len(model.blocks))
        block = model.blocks[0]
        assert block.attn.proj.weight.std().item() == pytest.approx(expected, rel=0.15)
        assert block.temporal.pw_conv2.weight.std().item() == pytest.approx(expected, rel=0.15)
        assert block.temporal.pw_conv1.weight.std().item() == pytest.approx(64 ** -0.5, rel=0.15)
        assert torch.count_nonzero(block.temporal.pw_conv1.bias) == 0
        assert block.mlp.fc1.weight.std().item() == pytest.approx(128 ** -0.5, rel=0.15)
    assert residual_init_std(64, 4) < residual_init_std(64, 1)
    assert model.pos_embed.std().item() == pytest.approx(0.01, rel=0.2)


def test_gradient_checkpointing_gives_the_same_result():
    torch.manual_seed(0)
    plain = create_model("side4video", TINY, 5, side_dim=32, drop_path=0.0)
    checkpointed = create_model("side4video", TINY, 5, side_dim=32, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    frames = torch.randn(2, 4, 3, 32, 32)
    tokens = [torch.randn(8, 17, 48) for _ in range(4)]
    out_plain, out_ckpt = plain(frames, tokens), checkpointed(frames, tokens)
    torch.testing.assert_close(out_plain, out_ckpt)
    out_plain.sum().backward()
    out_ckpt.sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_temporal_modules_are_pluggable():
    for name in ("conv", "tsm", "none"):
        model = create_model("side4video", TINY, 5, side_dim=32, temporal_module=name)
        assert model(torch.randn(1, 4, 3, 32, 32), [torch.randn(4, 17, 48)] * 4).shape == (1, 5)
    with pytest.raises(ValueError, match="unknown temporal module"):
        create_model("side4video", TINY, 5, side_dim=32, temporal_module="lstm")


def test_tsm_shift_is_exact():
    x = torch.arange(16 * 3, dtype=torch.float32).reshape(1, 16, 3, 1, 1).repeat(2, 1, 1, 2, 2)
    out = temporal_shift(x, fold_div=8)        # fold = 2 channels each way
    assert torch.equal(out[:, 0:2, :-1], x[:, 0:2, 1:]) and torch.all(out[:, 0:2, -1] == 0)
    assert torch.equal(out[:, 2:4, 1:], x[:, 2:4, :-1]) and torch.all(out[:, 2:4, 0] == 0)
    assert torch.equal(out[:, 4:], x[:, 4:])


def test_unknown_head():
    with pytest.raises(ValueError, match="unknown head"):
        create_model("xclip", TINY, 5)
