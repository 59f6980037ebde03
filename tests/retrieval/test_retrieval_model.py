"""The retrieval model: untrained it is frozen CLIP frame by frame, the frozen towers never change or get gradients,
the text tower is open_clip's, captions are cut as the reference cuts them, and only the side network, its projection
and the temperature train."""
from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from side4video.backbones.frozen import BackboneInfo
from side4video.models import count_parameters, model_inputs, shift_cls_in_time
from side4video.modules import BlockContext
from side4video.retrieval.head import RetrievalSideNetwork
from side4video.retrieval.model import CLIP_INIT_LOGIT_SCALE, RetrievalModel, create_retrieval_model
from side4video.retrieval.text import create_text_tower, text_projection
from tests.support import TINY_CLIP_JSON, TINY_EVA_JSON, tiny_open_clip

SIDE_DIM = 32
CAPTIONS = ["a man is playing a guitar on stage", "two dogs run along the beach", "someone is cooking pasta"]
LONG_CAPTION = " ".join(["a little girl in a red coat walks her small brown dog slowly through the snowy park"] * 3)


def _frames(batch: int = 2, num_frames: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, num_frames, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip CLIP (non-trivial norms) and its weights written as a real safetensors file."""
    reference = tiny_open_clip()
    path = tmp_path_factory.mktemp("retrieval") / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    return reference, path


@pytest.fixture
def model(tiny_clip):
    torch.manual_seed(0)
    return create_retrieval_model(TINY_CLIP_JSON, tiny_clip[1], side_dim=SIDE_DIM, sim_header="meanP")


def _frozen_clip_frames(reference: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return reference.encode_image(frames.flatten(0, 1)).reshape(*frames.shape[:2], -1)


def _contrastive_loss(model: RetrievalModel, frames: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Symmetric InfoNCE on mean-pooled frames (kept here so the test does not depend on the loss module)."""
    tokens, mask = model.tokenize(captions)
    sentence, _ = model.encode_text(tokens, mask)
    video = F.normalize(model.encode_video(frames), dim=-1).mean(dim=1)
    logits = model.scale() * F.normalize(sentence, dim=-1) @ F.normalize(video, dim=-1).T
    target = torch.arange(len(captions))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# -- the defining property --------------------------------------------------------------------------------
def test_untrained_model_gives_frozen_clip_image_embedding_of_every_frame(model, tiny_clip):
    frames = _frames()
    expected = _frozen_clip_frames(tiny_clip[0], frames)
    for mode in (True, False):        # BatchNorm in either mode: the zero side projection hides it exactly
        model.train(mode)
        embeddings = model.encode_video(frames)
        assert embeddings.shape == (2, 4, model.embed_dim) and embeddings.dtype == torch.float32
        assert torch.equal(embeddings, expected)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    masked = model.encode_video(frames, mask)
    assert torch.equal(masked[mask.bool()], expected[mask.bool()])
    assert not masked[~mask.bool()].any()


def test_untrained_eva_model_gives_frozen_eva_embedding(tmp_path):
    reference = tiny_open_clip(TINY_EVA_JSON)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "eva.safetensors")
    eva = create_retrieval_model(TINY_EVA_JSON, tmp_path / "eva.safetensors", side_dim=SIDE_DIM)
    frames = _frames(1, 2)
    torch.testing.assert_close(eva.encode_video(frames), _frozen_clip_frames(reference, frames), rtol=0, atol=1e-6)
    tokens, mask = eva.tokenize(CAPTIONS[:2])
    with torch.no_grad():
        expected = reference.encode_text(tokens)
    torch.testing.assert_close(eva.encode_text(tokens, mask)[0], expected, rtol=1e-5, atol=1e-5)


# -- training ---------------------------------------------------------------------------------------------
def test_one_step_trains_only_the_side_network_and_temperature(model, tiny_clip):
    frames = _frames(3, 4, seed=1)
    before = model.encode_video(frames).detach()
    backbone_state, text_state = _snapshot(model.backbone), _snapshot(model.text_tower)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in model.side.parameters()} | {id(model.logit_scale)}

    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    loss = _contrastive_loss(model, frames, CAPTIONS)
    loss.backward()
    frozen = [*model.backbone.parameters(), *model.text_tower.parameters()]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    assert model.side.side_proj.weight.grad.abs().sum() > 0 and model.logit_scale.grad is not None
    optimizer.step()

    model.eval()
    after = model.encode_video(frames)
    assert not torch.allclose(after, before), "a step must move the frame embeddings away from frozen CLIP"
    for name, value in _snapshot(model.backbone).items():
        assert torch.equal(value, backbone_state[name]), f"frozen image tower changed: {name}"
    for name, value in _snapshot(model.text_tower).items():
        assert torch.equal(value, text_state[name]), f"frozen text tower changed: {name}"


def test_checkpoint_holds_only_trainable_parts(model):
    keys = set(model.state_dict())
    assert keys and all(k.startswith(("side.", "wti.")) or k == "logit_scale" for k in keys)
    assert not any(k.startswith("side.fc.") for k in keys), "retrieval has no classifier"
    assert model.logit_scale.item() == pytest.approx(CLIP_INIT_LOGIT_SCALE)
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_trainable_parameter_count_matches_formula(model):
    d, w, p, n = SIDE_DIM, 64, 8, (64 // 8) ** 2       # tiny_clip.json: width 64, patch 8, 64 px, 4 layers
    layers = 4
    stem = 3 * 3 * p * p * d + 2 * d                     # Conv3d (3, p, p) without bias + BatchNorm
    tap = 2 * w + w * d + d                              # LayerNorm(W) + Linear(W → D)
    temporal = 2 * d + (d * d + d) + (3 * d + d) + (d * d + d)   # BN + PW + depthwise 3×1×1 + PW
    attention = 2 * d + (3 * d * d + 3 * d) + (d * d + d)        # LN + qkv + out projection
    mlp = 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)          # BN + fc1 + fc2
    head = (n + 1) * d + 2 * d + d * w                   # position rows incl. the class token, BN, side_proj
    expected = stem + layers * (tap + temporal + attention + mlp) + head + 1   # + the logit scale
    assert count_parameters(model) == expected
    assert model.side.pos_embed.shape == (n + 1, d)


def test_trainable_text_tower_gets_gradients_and_is_saved(tiny_clip):
    torch.manual_seed(0)
    model = create_retrieval_model(TINY_CLIP_JSON, tiny_clip[1], side_dim=SIDE_DIM, train_text=True,
                                   sim_header="meanP")
    text_params = list(model.text_tower.parameters())
    assert all(p.requires_grad for p in text_params)
    assert count_parameters(model) == count_parameters(model.side) + 1 + sum(p.numel() for p in text_params)
    assert any(k.startswith("text.") for k in model.state_dict())
    _contrastive_loss(model, _frames(3, 2), CAPTIONS).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in text_params)
    assert all(p.grad is None for p in model.backbone.parameters())


# -- text tower -------------------------------------------------------------------------------------------
def test_text_tower_sentence_embedding_is_open_clip_encode_text(tiny_clip):
    reference = tiny_clip[0]
    tower = create_text_tower(TINY_CLIP_JSON, tiny_clip[1])
    tokens, mask = tower.tokenize(CAPTIONS)
    assert torch.equal(tokens, open_clip.tokenize(CAPTIONS)), "short captions: the same tokens as open_clip"
    with torch.enable_grad():
        sentence, words = tower.encode(tokens, mask)
    assert not sentence.requires_grad and not words.requires_grad, "a frozen tower keeps no autograd graph"
    with torch.no_grad():
        expected = reference.encode_text(tokens)
    torch.testing.assert_close(sentence, expected, rtol=1e-5, atol=1e-6)   # same maths; BLAS rounding aside
    assert words.shape == (3, 77, tower.embed_dim)
    eot = tokens.argmax(dim=-1)
    torch.testing.assert_close(words[torch.arange(3), eot], sentence, rtol=1e-5, atol=1e-6)
    assert not words[~mask.bool()].any(), "padding positions are zeroed"
    assert not tower.training and not tower.train().training, "a frozen tower stays in eval mode"
    assert all(not p.requires_grad for p in tower.parameters())
    assert not hasattr(tower.model, "visual"), "the image tower is not kept twice"


def test_text_projection_helper_finds_both_open_clip_layouts(tiny_clip):
    clip_model = tiny_clip[0]
    assert text_projection(clip_model) is clip_model.text_projection
    custom = tiny_open_clip(TINY_EVA_JSON)           # CustomTextCLIP: the text parts live in .text
    assert text_projection(custom) is custom.text.text_projection


def test_truncation_keeps_start_end_and_max_words(tiny_clip):
    tower = create_text_tower(TINY_CLIP_JSON, tiny_clip[1])
    bpe = tower.tokenizer.encode(LONG_CAPTION)
    assert len(bpe) > 40
    tokens, mask = tower.tokenize([LONG_CAPTION, "a cat"], max_words=32)
    sot, eot = tower.tokenizer.sot_token_id, tower.tokenizer.eot_token_id
    assert tokens.shape == mask.shape == (2, 77)
    assert mask.sum(dim=1).tolist() == [32, 4]           # SOT + 30 words + EOT; SOT + "a" + "cat" + EOT
    assert tokens[0, 0] == sot and tokens[0, 31] == eot and not tokens[0, 32:].any()
    assert tokens[0, 1:31].tolist() == bpe[:30], "the first max_words-2 tokens are kept, in order"
    assert tower.tokenizer.decode(tokens[0, 1:5].tolist()).split() == ["a", "little", "girl", "in"]
    assert tokens[1, :4].tolist() == [sot, *tower.tokenizer.encode("a cat"), eot]
    # truncated captions still pool at their end token: the sentence feature is the EOT position's
    sentence, words = tower.encode(tokens, mask)
    torch.testing.assert_close(words[0, 31], sentence[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        tower.tokenize("x", max_words=1)
    with pytest.raises(ValueError):
        tower.tokenize("x", max_words=78)


# -- the retrieval side block -----------------------------------------------------------------------------
def test_retrieval_side_block_is_self_attention_with_a_class_token_position_row():
    """The reference's retrieval block: x + MHA(LN([shift(cls); x] + pos))[patches], then x + MLP(BN(x))."""
    info = BackboneInfo(arch="tiny", family="clip", width=48, num_layers=2, patch_size=8, image_size=32,
                        embed_dim=24, weights=None, weights_format=None, quick_gelu=False)
    torch.manual_seed(0)
    side = RetrievalSideNetwork(info, side_dim=SIDE_DIM, temporal_module="none", recompute=False).eval()
    block = side.blocks[0]
    with torch.no_grad():
        for name, tensor in side.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn_like(tensor)) if "running_var" not in name else tensor.uniform_(.5, 2)
    b, t, n = 2, 3, info.num_patches
    x, cls = torch.randn(b * t, n, SIDE_DIM), torch.randn(b * t, 1, SIDE_DIM)
    out = block(x, BlockContext(grid=(b, t, 4, 4), index=0, depth=2, cls=cls), side.pos_embed)

    attention = nn.MultiheadAttention(SIDE_DIM, block.attn.num_heads, batch_first=True).eval()
    with torch.no_grad():
        attention.in_proj_weight.copy_(block.attn.qkv.weight)
        attention.in_proj_bias.copy_(block.attn.qkv.bias)
        attention.out_proj.weight.copy_(block.attn.proj.weight)
        attention.out_proj.bias.copy_(block.attn.proj.bias)
        sequence = block.attn_norm(torch.cat([shift_cls_in_time(cls, t), x], dim=1) + side.pos_embed)
        x_ref = x + attention(sequence, sequence, sequence, need_weights=False)[0][:, 1:]
        x_ref = x_ref + block.mlp(block.mlp_norm(x_ref))
        torch.testing.assert_close(out, x_ref, rtol=1e-5, atol=1e-5)


def test_logit_scale_can_start_from_the_weight_file(tiny_clip):
    model = create_retrieval_model(TINY_CLIP_JSON, tiny_clip[1], side_dim=SIDE_DIM, logit_scale_init="pretrained")
    assert model.logit_scale.item() == pytest.approx(tiny_clip[0].logit_scale.item())
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == pytest.approx(100.0) and math.isfinite(model.scale().item())


def test_wti_head_trains_with_the_side_network_and_the_engine_call_equals_encode_video(tiny_clip):
    torch.manual_seed(0)
    model = create_retrieval_model(TINY_CLIP_JSON, tiny_clip[1], side_dim=SIDE_DIM)   # sim_header wti
    e = 32                                                                           # tiny_clip.json embed_dim
    assert count_parameters(model) == count_parameters(model.side) + 1 + 2 * (e * e + e + e + 1)
    assert {k.split(".")[0] for k in model.state_dict()} == {"side", "wti", "logit_scale"}
    frames = _frames(2, 4, seed=3)
    outputs = model(model_inputs(model.backbone, model, frames))     # what the training step calls
    torch.testing.assert_close(outputs.frames, model.encode_video(frames), rtol=0, atol=0)
    assert outputs.model is model and outputs.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    tokens, mask = model.tokenize(CAPTIONS[:3])
    sentence, words = model.encode_text(tokens, mask)
    sims = model.similarity(sentence, words, mask, outputs.frames)
    assert sims.shape == (3, 2)
    sims.sum().backward()
    assert all(p.grad is not None for p in model.wti.parameters())


def test_temporal_transformer_baseline_starts_as_frozen_clip_and_sees_only_frame_embeddings(tiny_clip):
    torch.manual_seed(0)
    model = create_retrieval_model(TINY_CLIP_JSON, tiny_clip[1], sim_header="meanP",
                                   video_head="temporal_transformer", max_frames=8)
    assert model.side is None and model.tap_layers == [3]          # only the last layer's class token
    assert {k.split(".")[0] for k in model.state_dict()} == {"frame_transformer", "logit_scale"}
    frames = _frames()
    torch.testing.assert_close(model.encode_video(frames), _frozen_clip_frames(tiny_clip[0], frames),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="video_head must be one of"):
        create_retrieval_model(TINY_CLIP_JSON, tiny_clip[1], video_head="lstm")
