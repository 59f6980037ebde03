"""Frozen backbones: every weight format loads exactly, taps have the right shapes, errors are clear,
and the backbone never changes."""
from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from safetensors.torch import save_file

from side4video.backbones import (
    WeightMismatchError,
    backbone_identity,
    create_backbone,
    describe_backbone,
    resolve_arch,
)
from side4video.backbones.frozen import select_layers
from tests.support import (
    TINY_CLIP_JSON,
    TINY_EVA_JSON,
    tiny_open_clip,
    to_baai_eva_state_dict,
    write_openai_torchscript,
)

IMAGES = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _assert_same_encoder(encoder, reference):
    with torch.no_grad():
        expected = reference.encode_image(IMAGES)
    torch.testing.assert_close(encoder.encode_image(IMAGES), expected, rtol=1e-5, atol=1e-5)
    taps = encoder.tap(IMAGES)
    torch.testing.assert_close(taps.embedding, expected, rtol=1e-5, atol=1e-5)
    info = encoder.info
    assert taps.layers == list(range(info.num_layers))
    assert [tuple(t.shape) for t in taps.tokens] == [(3, 1 + info.num_patches, info.width)] * info.num_layers


def test_openai_torchscript_archive_loads_with_quickgelu(tmp_path):
    reference = tiny_open_clip(quick_gelu=True)
    path = write_openai_torchscript(reference, tmp_path / "tiny.pt")
    encoder = create_backbone(TINY_CLIP_JSON, pretrained=path)
    assert encoder.info.weights_format == "torchscript"
    assert encoder.info.quick_gelu, "OpenAI archives must get QuickGELU without the user asking"
    _assert_same_encoder(encoder, reference)


def test_plain_state_dict_pt_and_bin(tmp_path):
    reference = tiny_open_clip()
    for suffix in (".pt", ".bin", ".pth"):
        path = tmp_path / f"tiny{suffix}"
        torch.save(reference.state_dict(), path)
        encoder = create_backbone(TINY_CLIP_JSON, pretrained=path)
        assert not encoder.info.quick_gelu
        _assert_same_encoder(encoder, reference)


def test_state_dict_with_openai_marker_keys_gets_quickgelu(tmp_path):
    reference = tiny_open_clip(quick_gelu=True)
    state = dict(reference.state_dict(), input_resolution=torch.tensor(64), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    torch.save(state, tmp_path / "converted.pt")
    encoder = create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "converted.pt")
    assert encoder.info.quick_gelu
    _assert_same_encoder(encoder, reference)


def test_safetensors(tmp_path):
    reference = tiny_open_clip()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "tiny.safetensors")
    encoder = create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "tiny.safetensors")
    assert encoder.info.weights_format == "safetensors"
    _assert_same_encoder(encoder, reference)


def test_open_clip_training_checkpoint(tmp_path):
    reference = tiny_open_clip()
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    checkpoint = {"epoch": 3, "name": "tiny", "state_dict": state}
    torch.save(checkpoint, tmp_path / "epoch_3.pt")
    encoder = create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "epoch_3.pt")
    assert encoder.info.weights_format == "open_clip_checkpoint"
    _assert_same_encoder(encoder, reference)


def test_eva_open_clip_format_and_baai_format(tmp_path):
    reference = tiny_open_clip(TINY_EVA_JSON)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "eva.safetensors")
    encoder = create_backbone(TINY_EVA_JSON, pretrained=tmp_path / "eva.safetensors")
    assert encoder.info.family == "eva"
    _assert_same_encoder(encoder, reference)

    torch.save(to_baai_eva_state_dict(reference.state_dict()), tmp_path / "EVA02_CLIP_tiny.pt")
    encoder = create_backbone(TINY_EVA_JSON, pretrained=tmp_path / "EVA02_CLIP_tiny.pt")
    _assert_same_encoder(encoder, reference)


def test_taps_equal_open_clip_intermediates(tmp_path):
    reference = tiny_open_clip()
    torch.save(reference.state_dict(), tmp_path / "tiny.pt")
    encoder = create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "tiny.pt")
    taps = encoder.tap(IMAGES, layers=[0, 2], embedding=False)
    assert taps.embedding is None and taps.layers == [0, 2]
    with torch.no_grad():
        out = reference.visual.forward_intermediates(IMAGES, indices=[0, 2], output_fmt="NLC",
                                                     output_extra_tokens=True, intermediates_only=True)
    for tokens, patches, prefix in zip(taps.tokens, out["image_intermediates"], out["image_intermediates_prefix"]):
        torch.testing.assert_close(tokens[:, 1:], patches)
        torch.testing.assert_close(tokens[:, :1], prefix)


def test_layer_selection():
    assert select_layers(12, "all") == list(range(12))
    assert select_layers(12, 2) == [1, 3, 5, 7, 9, 11]
    assert select_layers(12, "every_other") == [1, 3, 5, 7, 9, 11]
    assert select_layers(12, 4) == [3, 7, 11]
    assert select_layers(12, [0, -1, 5]) == [0, 5, 11]
    assert select_layers(12, None) == []
    with pytest.raises(ValueError, match="out of range"):
        select_layers(12, [12])


def test_arch_names_resolve():
    assert resolve_arch("ViT-B/16").name == resolve_arch("ViT-B-16").name == "ViT-B-16"
    assert resolve_arch("ViT-B/16").weight_files[0] == "ViT-B-16.pt"
    assert resolve_arch("ViT-L/14@336px").weight_files[0] == "ViT-L-14-336px.pt"
    assert resolve_arch("ViT-L-14-336").name == "ViT-L-14-336"
    assert resolve_arch("EVA02-CLIP-L-14").name == "EVA02-L-14"
    assert resolve_arch("EVA02-B-16").weight_files[0] == "EVA02_CLIP_B_psz16_s8B.pt"
    with pytest.raises(ValueError, match="did you mean|Did you mean"):
        resolve_arch("ViT-B/61")


@pytest.mark.parametrize("arch,width,layers,patch,family", [
    ("ViT-B/32", 768, 12, 32, "clip"), ("ViT-B/16", 768, 12, 16, "clip"), ("ViT-L/14", 1024, 24, 14, "clip"),
    ("ViT-L/14@336px", 1024, 24, 14, "clip"), ("EVA02-B-16", 768, 12, 16, "eva"), ("EVA02-L-14", 1024, 24, 14, "eva")])
def test_describe_real_architectures(arch, width, layers, patch, family):
    info = describe_backbone(arch)
    assert (info.width, info.num_layers, info.patch_size, info.family) == (width, layers, patch, family)


def test_missing_default_file_names_exact_path(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        create_backbone("ViT-B/16", pretrained_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "ViT-B-16.pt") in message and "clip_pretrain/README.md" in message


def test_default_lookup_finds_conventional_file(tmp_path):
    reference = tiny_open_clip()
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(TINY_CLIP_JSON, folder / "tiny_clip.json")
    torch.save(reference.state_dict(), folder / "tiny_clip.pt")  # next to the JSON config
    encoder = create_backbone(folder / "tiny_clip.json")
    assert encoder.info.weights == str(folder / "tiny_clip.pt")
    identity = backbone_identity(encoder)
    assert len(identity["sha256"]) == 64 and identity["arch"] == "tiny_clip"


def test_missing_explicit_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.pt")):
        create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "nope.pt")


def test_mismatched_weights_are_listed(tmp_path):
    eva = tiny_open_clip(TINY_EVA_JSON)
    torch.save(eva.state_dict(), tmp_path / "eva.pt")
    with pytest.raises(WeightMismatchError) as err:
        create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "eva.pt")
    message = str(err.value)
    assert "missing from the file" in message and "visual.conv1.weight" in err.value.missing
    assert "unexpected in the file" in message and "visual.trunk" in message and "\n" not in message

    state = tiny_open_clip().state_dict()
    state["visual.positional_embedding"] = torch.zeros(50, 64)
    del state["visual.ln_post.weight"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightMismatchError) as err:
        create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "bad.pt")
    message = str(err.value)
    assert "visual.positional_embedding: file (50, 64) vs model (65, 64)" in message
    assert "visual.ln_post.weight" in message and err.value.missing == ["visual.ln_post.weight"]


def test_unreadable_weight_file(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(ValueError, match="cannot read"):
        create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "text.pt")


def test_random_weights_only_on_request_and_warn():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        encoder = create_backbone(TINY_CLIP_JSON, pretrained=False)
    assert encoder.info.weights is None


def test_frozen_backbone_is_bit_identical_after_training_steps(quiet_random_weights):
    from side4video.models import Recognizer, create_model
    torch.manual_seed(0)
    encoder = create_backbone(TINY_CLIP_JSON, pretrained=False)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    assert not any(p.requires_grad for p in encoder.parameters())
    model = create_model("side4video", encoder.info, 4, side_dim=32)
    recognizer = Recognizer(encoder, model)
    encoder.train()
    assert not encoder.model.training, "train() must not take the frozen encoder out of eval mode"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    frames = torch.randn(2, 4, 3, 64, 64)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(recognizer(frames), torch.tensor([0, 3]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in encoder.parameters())
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p is q for p in encoder.parameters() for group in optimizer.param_groups for q in group["params"])


def test_reduced_precision_backbone(quiet_random_weights):
    torch.manual_seed(0)
    fp32 = create_backbone(TINY_CLIP_JSON, pretrained=False)
    bf16 = create_backbone(TINY_CLIP_JSON, pretrained=False, precision="bf16")
    bf16.load_state_dict({k: v for k, v in fp32.state_dict().items()})
    taps = bf16.tap(IMAGES)
    assert taps.tokens[0].dtype == torch.bfloat16
    torch.testing.assert_close(taps.embedding.float(), fp32.encode_image(IMAGES), rtol=0.1, atol=0.1)
    with pytest.raises(ValueError, match="precision"):
        create_backbone(TINY_CLIP_JSON, pretrained=False, precision="fp8")


def test_text_tower_dropped_unless_kept(tmp_path):
    reference = tiny_open_clip()
    torch.save(reference.state_dict(), tmp_path / "tiny.pt")
    encoder = create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "tiny.pt")
    assert not encoder.has_text_tower
    assert not any(k.startswith(("transformer.", "token_embedding")) for k in encoder.model.state_dict())
    kept = create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "tiny.pt", keep_text_tower=True)
    tokens = torch.randint(0, 49408, (2, 77))
    with torch.no_grad(), warnings.catch_warnings():
        torch.testing.assert_close(kept.encode_text(tokens), reference.encode_text(tokens))


def test_image_tower_only_weight_file(tmp_path):
    reference = tiny_open_clip()
    visual = {k: v for k, v in reference.state_dict().items() if k.startswith("visual.")}
    torch.save(visual, tmp_path / "visual_only.pt")
    encoder = create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "visual_only.pt")
    _assert_same_encoder(encoder, reference)
    with pytest.raises(WeightMismatchError) as err:
        create_backbone(TINY_CLIP_JSON, pretrained=tmp_path / "visual_only.pt", keep_text_tower=True)
    assert err.value.missing and not any(k.startswith("visual.") for k in err.value.missing)


def _block_outputs(blocks, run):
    """Every block's output during ``run()``, captured with forward hooks (batch-first [B, L, W])."""
    outputs = []
    hooks = [block.register_forward_hook(lambda module, args, out: outputs.append(out)) for block in blocks]
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


@pytest.mark.parametrize("config", [TINY_CLIP_JSON, TINY_EVA_JSON])
def test_taps_are_bit_identical_to_the_blocks_outputs(config, quiet_random_weights):
    """The public forward_intermediates taps are exactly each block's output in a plain encode_image pass
    (the loop through the blocks that the taps replaced)."""
    encoder = create_backbone(config, pretrained=False)
    visual = encoder.model.visual
    blocks = visual.trunk.blocks if hasattr(visual, "trunk") else visual.transformer.resblocks
    batch_first = hasattr(visual, "trunk") or visual.transformer.batch_first
    expected = _block_outputs(blocks, lambda: encoder.encode_image(IMAGES))
    if not batch_first:
        expected = [x.transpose(0, 1) for x in expected]
    taps = encoder.tap(IMAGES, layers="all", embedding=True)
    for i, (cls, patches) in enumerate(zip(taps.cls_tokens, taps.patch_tokens)):
        assert torch.equal(cls, expected[i][:, :1]) and torch.equal(patches, expected[i][:, 1:]), f"layer {i}"
    assert torch.equal(taps.embedding, encoder.encode_image(IMAGES))
    early = encoder.tap(IMAGES, layers=[1], embedding=False)
    assert torch.equal(early.patch_tokens[0], expected[1][:, 1:]) and early.embedding is None


def test_backbone_precision_holds_under_the_callers_autocast(quiet_random_weights):
    """network.backbone_precision: an fp32 backbone computes in fp32 even inside the training autocast."""
    encoder = create_backbone(TINY_CLIP_JSON, pretrained=False, precision="fp32")
    plain = encoder.tap(IMAGES, layers=[0, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = encoder.tap(IMAGES, layers=[0, 3])
        embedding = encoder.encode_image(IMAGES)
    assert inside.patch_tokens[0].dtype == torch.float32 and embedding.dtype == torch.float32
    assert torch.equal(inside.patch_tokens[1], plain.patch_tokens[1]) and torch.equal(inside.embedding, plain.embedding)
