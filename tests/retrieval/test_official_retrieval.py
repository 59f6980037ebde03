"""Checkpoints of the official Side4Video retrieval code (``main_task_retrieval.py``'s ``pytorch_model.bin.N``) load
into :class:`RetrievalModel` with the frame embeddings the official formulas give.

The official checkpoints here are written from a tiny retrieval model in the official key layout, as read from
``Retrieval/modules/module_clip.py`` and ``modules/modeling.py``: the whole CLIP under ``clip.`` (side network under
``clip.visual[.transformer].side_*`` with the temporal conv named ``norm1 / pw_conv1 / dw_conv1 / pw_conv2``, a
non-zero stem conv bias, ``side_proj`` as a [D, W] matrix, the frozen towers, a scalar ``logit_scale``), the WTI
weight networks at the top level, and, as the official ``convert_weights`` leaves them, fp16 Linear/Conv weights.
The reference forward below is written from the official ``VisualTransformer`` / ``AttnCBlock`` equations.
"""
from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from side4video.backbones import create_backbone
from side4video.errors import CheckpointError
from side4video.models import official as recognition
from side4video.retrieval.model import create_retrieval_model
from side4video.retrieval.official import convert_official_retrieval_checkpoint, is_official_retrieval_checkpoint
from tests.models.official_reference import _attention, _bn, _linear, _ln, _shift_token, _stem
from tests.support import TINY_CLIP_JSON, tiny_open_clip

SIDE_DIM = 128          # two heads of 64, the official D // 64 (the official code cannot build D < 64)
PATCH, FRAMES = 8, 4
V, T = "clip.visual.", "clip.visual.transformer."
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# what the official convert_weights stores in fp16: Conv/Linear weights and biases (nn.MultiheadAttention's packed
# in-projection and out_proj included), the visual ``proj`` and ``text_projection``; norms, embeddings and the raw
# ``side_proj`` / position parameters stay fp32
OFFICIAL_FP16 = re.compile(r"^clip\.(.*\.)?(side_conv1|side_linears\.\d+|pw_conv1|dw_conv1|pw_conv2|fc1|fc2|out_proj|"
                           r"c_fc|c_proj|conv1)\.(weight|bias)$|^clip\..*\.in_proj_(weight|bias)$|"
                           r"^clip\.(visual\.proj|text_projection)$")
# the same tensors in this toolkit's side network: kept fp16-representable so the round trip is exact
OURS_FP16 = re.compile(r"(stem\.conv|taps\.\d+\.proj|pw_conv1|dw_conv|pw_conv2|attn\.qkv|attn\.proj|mlp\.fc1|"
                       r"mlp\.fc2)\.(weight|bias)$")


# -- the tiny model and its official checkpoint -------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """One tiny CLIP weight file for both towers (non-trivial norms)."""
    path = tmp_path_factory.mktemp("official_retrieval") / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_open_clip().state_dict().items()}, path)
    return path


def build_model(weights, seed: int = 0, train_text: bool = False):
    torch.manual_seed(seed)
    return create_retrieval_model(TINY_CLIP_JSON, weights, side_dim=SIDE_DIM, train_text=train_text).eval()


def randomise(model, seed: int = 0):
    """Non-trivial side, WTI and temperature values (side_proj too, zero at init), fp16-representable where the
    official checkpoint stores fp16, so that a wrong mapping shows up and the round trip can be exact."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prefix, part in (("side.", model.side), ("wti.", model.wti)):
            for name, tensor in part.state_dict().items():
                if not tensor.is_floating_point():
                    continue
                noise = torch.randn(tensor.shape, generator=generator)
                value = tensor.abs() + 0.5 + 0.1 * noise if name.endswith("running_var") else tensor + 0.1 * noise
                if name == "side_proj.weight":
                    value = 0.05 * noise
                tensor.copy_(value.half().float() if prefix == "side." and OURS_FP16.search(name) else value)
        model.logit_scale.fill_(4.25)
    return model


@pytest.fixture(scope="module")
def source(weights):
    return randomise(build_model(weights))


def _copy_bn(out: dict, ours: dict, src: str, dst: str) -> None:
    for suffix in _BN:
        out[f"{dst}.{suffix}"] = ours[f"{src}.{suffix}"].clone()


def official_state(model, *, stem_bias: torch.Tensor | None = None, fp16: bool = True, prefix: str = "",
                   wti: bool = True) -> dict[str, torch.Tensor]:
    """What the official ``save_model`` writes for ``model``: ``CLIP4Clip.state_dict()``."""
    side = {k: v.detach() for k, v in model.side.state_dict().items()}
    dim = side["pos_embed"].shape[1]
    bias = torch.linspace(-0.3, 0.4, dim).half().float() if stem_bias is None else stem_bias
    out: dict[str, torch.Tensor] = {V + "side_conv1.weight": side["stem.conv.weight"].clone(),
                                    V + "side_conv1.bias": bias}
    _copy_bn(out, side, "stem.bn", V + "side_pre_bn3d")
    # the official conv has a bias; BN(conv + b) equals ours when the official running mean is ours + b
    out[V + "side_pre_bn3d.running_mean"] = side["stem.bn.running_mean"] + bias
    out[T + "side_spatial_position_embeddings"] = side["pos_embed"].clone()
    for k in range(len(model.side.blocks)):
        block, tap, dst = f"blocks.{k}", f"taps.{k}", f"{T}side_transformer.{k}"
        for part in ("weight", "bias"):
            out[f"{T}side_lns.{k}.{part}"] = side[f"{tap}.norm.{part}"].clone()
            out[f"{T}side_linears.{k}.{part}"] = side[f"{tap}.proj.{part}"].clone()
            for official, ours in (("pw_conv1", "pw_conv1"), ("dw_conv1", "dw_conv"), ("pw_conv2", "pw_conv2")):
                out[f"{dst}.{official}.{part}"] = side[f"{block}.pre_attn.0.{ours}.{part}"].clone()
            out[f"{dst}.ln_1.{part}"] = side[f"{block}.attn_norm.{part}"].clone()
            out[f"{dst}.attn.out_proj.{part}"] = side[f"{block}.attn.proj.{part}"].clone()
            out[f"{dst}.mlp.fc1.{part}"] = side[f"{block}.mlp.fc1.{part}"].clone()
            out[f"{dst}.mlp.fc2.{part}"] = side[f"{block}.mlp.fc2.{part}"].clone()
        out[f"{dst}.attn.in_proj_weight"] = side[f"{block}.attn.qkv.weight"].clone()
        out[f"{dst}.attn.in_proj_bias"] = side[f"{block}.attn.qkv.bias"].clone()
        _copy_bn(out, side, f"{block}.pre_attn.0.norm", f"{dst}.norm1")
        _copy_bn(out, side, f"{block}.mlp_norm", f"{dst}.norm2")
    _copy_bn(out, side, "head_norm", V + "side_post_bn")
    out[V + "side_proj"] = side["side_proj.weight"].t().contiguous()      # used as x @ side_proj: [D, W]
    out.update({"clip." + k: v.detach().clone() for k, v in model.backbone.model.state_dict().items()})
    out.update({"clip." + k: v.detach().clone() for k, v in model.text_tower.model.state_dict().items()})
    out["clip.logit_scale"] = model.logit_scale.detach().reshape(()).clone()
    if wti:
        out.update({k.removeprefix("wti."): v.detach().clone() for k, v in model.wti.state_dict().items()})
    if fp16:
        out = {k: v.half() if OFFICIAL_FP16.match(k) else v for k, v in out.items()}
    return {prefix + k: v for k, v in out.items()}


# -- the official formulas ----------------------------------------------------------------------------------------
def official_frame_embeddings(state: dict, frames: torch.Tensor, layer_tokens: list[torch.Tensor]) -> torch.Tensor:
    """``VisualTransformer.forward`` of the official retrieval model (eval BatchNorms): ``layer_tokens`` are the
    frozen backbone's per-layer outputs ``[BT, 1+N, W]``; returns the frame embeddings ``[B, T, E]``."""
    state = {k: v.float() for k, v in state.items()}
    x, (b, t, h, w) = _stem(frames, state, "clip.visual", PATCH)            # [BT, N, D]
    dim = x.shape[-1]

    def to_video(tokens):                                                     # (h w) (b t) d -> b d t h w
        return tokens.reshape(b, t, h, w, dim).permute(0, 4, 1, 2, 3)

    def to_tokens(video):
        return video.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, dim)

    pos = state[T + "side_spatial_position_embeddings"]                      # [1+N, D]
    for k, tokens in enumerate(layer_tokens):
        s = f"{T}side_transformer.{k}"
        projected = _linear(_ln(tokens, state, f"{T}side_lns.{k}"), state, f"{T}side_linears.{k}")
        x = 0.5 * x + 0.5 * projected[:, 1:]
        # x + pw_conv2(dw_conv1(pw_conv1(norm1(x)))) on the video
        v = to_video(x)
        branch = F.conv3d(_bn(v, state, f"{s}.norm1"), state[f"{s}.pw_conv1.weight"], state[f"{s}.pw_conv1.bias"])
        branch = F.conv3d(branch, state[f"{s}.dw_conv1.weight"], state[f"{s}.dw_conv1.bias"], padding=(1, 0, 0),
                          groups=dim)
        x = to_tokens(v + F.conv3d(branch, state[f"{s}.pw_conv2.weight"], state[f"{s}.pw_conv2.bias"]))
        # [shifted class token; patches] + every position row, LN, self-attention of all tokens; patches kept
        xt = _ln(torch.cat([_shift_token(projected[:, :1], t), x], dim=1) + pos, state, f"{s}.ln_1")
        wq, wk, wv = state[f"{s}.attn.in_proj_weight"].chunk(3)
        bq, bk, bv = state[f"{s}.attn.in_proj_bias"].chunk(3)
        attended = _attention(xt, xt, wq, bq, wk, bk, wv, bv, state[f"{s}.attn.out_proj.weight"],
                              state[f"{s}.attn.out_proj.bias"], dim // 64)
        x = x + attended[:, 1:]
        normed = to_tokens(_bn(to_video(x), state, f"{s}.norm2"))
        x = x + _linear(F.gelu(_linear(normed, state, f"{s}.mlp.fc1")), state, f"{s}.mlp.fc2")
    pooled = _bn(to_video(x), state, V + "side_post_bn").permute(0, 2, 1, 3, 4).flatten(3).mean(-1)   # [B, T, D]
    cls = layer_tokens[-1][:, 0].reshape(b, t, -1)
    embedded = _ln(cls + pooled @ state[V + "side_proj"], state, "clip.visual.ln_post")
    return embedded @ state[V + "proj"]


def _frames(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, FRAMES, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# -- tests --------------------------------------------------------------------------------------------------------
def test_the_format_is_told_apart_from_recognition_and_our_own(source):
    state = official_state(source)
    assert is_official_retrieval_checkpoint(state)
    assert is_official_retrieval_checkpoint({"module." + k: v for k, v in state.items()})
    assert not recognition.is_official_checkpoint(state)
    recognition_like = {"visual.side_conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}
    assert not is_official_retrieval_checkpoint(recognition_like)
    assert not is_official_retrieval_checkpoint({"model_state_dict": state, "epoch": 3})
    assert not is_official_retrieval_checkpoint(source.state_dict())
    assert not is_official_retrieval_checkpoint({"epoch": 3, "optimizer_state_dict": {}, "loss": 0.5})


@pytest.mark.parametrize("prefix", ["", "module."])
def test_conversion_gives_back_the_state_dict(source, weights, prefix, caplog):
    caplog.set_level("INFO")
    converted = convert_official_retrieval_checkpoint(official_state(source, prefix=prefix), source.backbone,
                                                      source="pytorch_model.bin.4", text_tower=source.text_tower)
    expected = source.state_dict()
    assert set(converted["model"]) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(converted["model"][key], value, rtol=0, atol=1e-6, msg=key)
    details = converted["official"]
    assert details["stem_bias_folded"] and details["module_prefix"] == bool(prefix)
    assert details["sim_header"] == "wti" and details["side_dim"] == SIDE_DIM and details["num_heads"] == 2
    assert details["backbone_tensors_compared"] > 0 and converted["backbone"]["arch"]
    # the fp16 copies of the fine-tuned tensors differ from ours by their rounding only
    assert details["finetuned"]["visual"]["compared"] == 3 and details["finetuned"]["text"]["compared"] > 0
    assert details["finetuned"]["text"]["max_difference"] < 1e-3
    assert converted["epoch"] is None and "pytorch_model.bin.4" in caplog.text
    fresh = build_model(weights, seed=5)
    fresh.load_state_dict(converted["model"])           # strict: every key of the model, nothing else


def test_frame_embeddings_match_the_official_formulas(source, weights):
    state = official_state(source, fp16=False)
    model = build_model(weights, seed=7)
    model.load_state_dict(convert_official_retrieval_checkpoint(state, model.backbone)["model"])
    frames = _frames()
    layers = list(range(model.backbone.info.num_layers))
    tokens = model.backbone.tap(frames, layers=layers, embedding=False).tokens
    with torch.no_grad():
        ours = model.encode_video(frames)
        reference = official_frame_embeddings(state, frames, tokens)
        frozen = official_frame_embeddings({**state, V + "side_proj": torch.zeros_like(state[V + "side_proj"])},
                                           frames, tokens)
    assert ours.shape == reference.shape == (2, FRAMES, model.embed_dim)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    assert (reference - frozen).abs().max() > 1e-2       # the side network does change the embeddings


def test_another_backbone_is_a_one_line_error(source):
    torch.manual_seed(123)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        other = create_backbone(TINY_CLIP_JSON, pretrained=False)
    with pytest.raises(CheckpointError) as error:
        convert_official_retrieval_checkpoint(official_state(source), other, source="ckpt")
    assert "differs from the frozen backbone" in _one_line(error)


def test_fine_tuned_tensors_within_the_drift_pass_beyond_it_fail(source):
    state = official_state(source, fp16=False)
    state[V + "ln_post.weight"] = state[V + "ln_post.weight"] + 2e-4
    state["clip.ln_final.bias"] = state["clip.ln_final.bias"] - 3e-4
    details = convert_official_retrieval_checkpoint(state, source.backbone, text_tower=source.text_tower)["official"]
    assert details["finetuned"]["visual"]["max_difference"] == pytest.approx(2e-4, rel=0.05)
    assert details["finetuned"]["text"]["max_difference"] == pytest.approx(3e-4, rel=0.05)
    state["clip.token_embedding.weight"] = state["clip.token_embedding.weight"] + 0.05
    with pytest.raises(CheckpointError) as error:
        convert_official_retrieval_checkpoint(state, source.backbone, text_tower=source.text_tower)
    assert "clip.token_embedding.weight differs" in _one_line(error) and "1e-7 learning rate" in str(error.value)
    # told to accept any drift, it converts (and reports how far)
    accepted = convert_official_retrieval_checkpoint(state, source.backbone, text_tower=source.text_tower,
                                                     finetuned_atol=float("inf"))
    assert accepted["official"]["finetuned"]["text"]["max_difference"] == pytest.approx(0.05, rel=0.05)
    # without a text tower at hand, the text tower is not compared
    assert convert_official_retrieval_checkpoint(state, source.backbone)["official"]["finetuned"]["text"][
        "compared"] == 0


def test_a_trainable_text_tower_takes_the_fine_tuned_text_weights(source, weights):
    model = build_model(weights, seed=3, train_text=True)
    state = official_state(source)
    state["clip.ln_final.weight"] = state["clip.ln_final.weight"] + 1e-4      # what the 1e-7 fine-tuning did
    converted = convert_official_retrieval_checkpoint(state, model.backbone, text_tower=model.text_tower)
    assert set(converted["model"]) == set(model.state_dict())
    model.load_state_dict(converted["model"])
    torch.testing.assert_close(model.text_tower.model.ln_final.weight.detach(), state["clip.ln_final.weight"])
    torch.testing.assert_close(model.text_tower.model.transformer.resblocks[0].attn.in_proj_weight.detach(),
                               state["clip.transformer.resblocks.0.attn.in_proj_weight"].float())


def test_other_layouts_are_one_line_errors(source):
    good = official_state(source)
    without_wti = convert_official_retrieval_checkpoint(official_state(source, wti=False), source.backbone)
    assert without_wti["official"]["sim_header"] == "meanP" and not any(k.startswith("wti.")
                                                                           for k in without_wti["model"])
    cases = {
        "EVA-CLIP": {**good, V + "side_blocks.0.ln_1.weight": torch.ones(SIDE_DIM)},
        "side_transformerClip": {**good, "side_transformerClip.resblocks.0.ln_1.weight": torch.ones(32)},
        "does not have: clip.visual.side_gate": {**good, V + "side_gate": torch.zeros(1)},
        "lacks clip.visual.side_post_bn.weight": {k: v for k, v in good.items() if k != V + "side_post_bn.weight"},
        "video_weight_fc": {k: v for k, v in good.items() if not k.startswith("video_weight_fc.")},
    }
    for expected, state in cases.items():
        with pytest.raises(CheckpointError) as error:
            convert_official_retrieval_checkpoint(state, source.backbone, source="ckpt")
        assert expected in _one_line(error), expected
    with pytest.raises(CheckpointError) as error:
        convert_official_retrieval_checkpoint({"epoch": 3, "optimizer_state_dict": {}}, source.backbone)
    assert "not an official Side4Video retrieval checkpoint" in _one_line(error)


def test_the_file_loads_where_weights_load_and_converts_once(source, weights, tmp_path):
    """load_trainable_weights (test.py, pretrain:) reads the official file as it is; side4video convert writes it in
    this toolkit's format, which then loads without a conversion."""
    import yaml

    from side4video.config import load_config
    from side4video.engine.builders import load_trainable_weights
    from side4video.engine.checkpoint import load_checkpoint
    from side4video.tools.convert_official import main as convert_main

    path = tmp_path / "pytorch_model.bin.4"
    torch.save(official_state(source), path)
    fresh = build_model(weights, seed=7)
    load_trainable_weights(fresh, path, fresh.backbone)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({
        "task": {"type": "retrieval"}, "network": {"arch": str(TINY_CLIP_JSON), "pretrained": str(weights),
                                                   "side_dim": SIDE_DIM},
        "data": {"dataset": "jsonl", "train_csv": "t.jsonl", "val_csv": "v.jsonl", "features_path": "videos",
                 "input_size": 64}}))
    assert convert_main([str(path), "--config", str(config), "--out", str(tmp_path / "ours.pt")]) == 0
    written = load_checkpoint(tmp_path / "ours.pt")
    assert written["config"]["task"]["type"] == "retrieval"
    again = build_model(weights, seed=8)
    load_trainable_weights(again, tmp_path / "ours.pt", again.backbone, load_config(str(config), []))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
