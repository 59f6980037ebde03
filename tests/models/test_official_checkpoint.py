"""Checkpoints of the official Side4Video code (train_vision.py's VideoCLIP state dict) load with the official logits.

The official checkpoints here are written from a tiny model in the official key layout: the side part through
``to_official_layout`` (with a non-zero stem conv bias), the backbone tensors under the official names (CLIP:
OpenAI names without ``ln_post``/``proj``, which the official tower does not have; EVA: the BAAI layout).
"""
from __future__ import annotations

import dataclasses
import logging
import warnings

import pytest
import torch

from side4video.backbones import create_backbone
from side4video.engine.builders import load_trainable_weights, read_trainable_checkpoint
from side4video.engine.checkpoint import load_checkpoint
from side4video.errors import CheckpointError
from side4video.models import SideInputs, create_model, official
from tests.models.official_reference import official_clip_logits, official_eva_logits, to_official_layout
from tests.support import TINY_CLIP_JSON, TINY_EVA_JSON, to_baai_eva_state_dict

SIDE_DIM, CLASSES, PATCH = 64, 7, 8


def randomise(model, seed=0):
    """Non-trivial values everywhere (norms, biases, running statistics), so a wrong mapping shows up."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=generator)
                tensor.copy_(tensor.abs() + 0.5 + 0.1 * noise if name.endswith("running_var") else tensor + 0.1 * noise)
    return model


def tiny_backbone(family: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        return create_backbone(TINY_CLIP_JSON if family == "clip" else TINY_EVA_JSON, pretrained=False, **kwargs)


def official_backbone_tensors(backbone) -> dict[str, torch.Tensor]:
    """The frozen backbone's tensors under the names the official VideoCLIP gives them."""
    state = {k: v.float() for k, v in backbone.model.state_dict().items()}
    if backbone.info.family == "eva":
        return {k: v for k, v in to_baai_eva_state_dict(state).items() if k.startswith("visual.")}
    # the official CLIP VisualTransformer has no ln_post / proj (they are dropped when CLIP weights are loaded)
    return {k: v.clone() for k, v in state.items()
            if k.startswith("visual.") and k != "visual.proj" and not k.startswith("visual.ln_post.")}


def official_checkpoint(model, backbone, *, stem_bias=None, prefix="", extra=None, with_backbone=True):
    """(what the official train_vision.py saves, the official side layout without prefix)."""
    family = backbone.info.family
    bias = torch.randn(model.side_dim, generator=torch.Generator().manual_seed(1)) * 0.3 if stem_bias is None \
        else stem_bias
    side = to_official_layout(model.state_dict(), family, stem_bias=bias)
    state = {**(official_backbone_tensors(backbone) if with_backbone else {}), **side, **(extra or {})}
    optimizer = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3)}},
                 "param_groups": [{"lr": 1e-3, "weight_decay": 0.15, "params": [0]}]}
    return {"epoch": 11, "model_state_dict": {prefix + k: v for k, v in state.items()},
            "optimizer_state_dict": optimizer}, side


def source_model(backbone, seed=0, **kwargs):
    torch.manual_seed(seed)
    options = dict(side_dim=SIDE_DIM, **kwargs)
    return randomise(create_model("side4video", backbone.info, CLASSES, **options), seed).eval()


def logits_of(model, backbone, frames):
    taps = backbone.tap(frames, layers=model.backbone_layers, embedding=False)
    with torch.no_grad():
        return model(SideInputs.from_tokens(frames, taps.tokens)), taps.tokens


def reference_logits(family, side, tokens, frames):
    reference = official_clip_logits if family == "clip" else official_eva_logits
    return reference(side, frames, tokens, patch=PATCH)


@pytest.mark.parametrize("family,prefix", [("clip", ""), ("clip", "module."), ("eva", "module.")])
def test_official_checkpoint_loads_with_the_official_logits(family, prefix, tmp_path, caplog):
    backbone = tiny_backbone(family)
    source = source_model(backbone)
    extra = {"fusion_model.frame_position_embeddings.weight": torch.zeros(77, 32)}   # unused by the model
    checkpoint, side = official_checkpoint(source, backbone, prefix=prefix, extra=extra)
    assert side["visual.side_conv1.bias"].abs().min() > 0
    path = tmp_path / "model_best.pt"
    torch.save(checkpoint, path)
    assert official.is_official_checkpoint(load_checkpoint(path))

    fresh = create_model("side4video", backbone.info, CLASSES, side_dim=SIDE_DIM).eval()   # another init
    logger = logging.getLogger("side4video.models.official")
    logger.addHandler(caplog.handler)     # (the package logger may not propagate once a command set it up)
    try:
        with caplog.at_level(logging.INFO, logger="side4video.models.official"):
            loaded = load_trainable_weights(fresh, path, backbone)
    finally:
        logger.removeHandler(caplog.handler)
    frames = torch.randn(2, 4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours, tokens = logits_of(fresh, backbone, frames)
    torch.testing.assert_close(ours, reference_logits(family, side, tokens, frames), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours, logits_of(source, backbone, frames)[0], rtol=1e-5, atol=1e-5)

    details = loaded["official"]
    assert loaded["epoch"] == 11 and loaded["head"] == "side4video" and loaded["num_classes"] == CLASSES
    assert details["family"] == family and details["side_dim"] == SIDE_DIM and details["stem_bias_folded"]
    assert details["module_prefix"] == bool(prefix) and details["optimizer_state"] == "ignored"
    assert details["backbone_layers"] == ([0, 1, 2, 3] if family == "clip" else [1, 3])
    assert details["backbone_tensors_compared"] == len(official_backbone_tensors(backbone)) - (2 if family == "eva"
                                                                                                else 0)
    assert "fusion_model.frame_position_embeddings.weight" in details["ignored"]
    if family == "eva":   # BAAI's rotary tables have no counterpart in the timm trunk
        assert {"visual.rope.freqs_cos", "visual.rope.freqs_sin"} <= set(details["ignored"])
    assert loaded["backbone"]["arch"] == backbone.info.arch
    line = " ".join(r.getMessage() for r in caplog.records)
    assert "optimizer state ignored" in line and "fusion_model.frame_position_embeddings.weight" in line
    # the stem bias went into the stem BatchNorm's running mean
    torch.testing.assert_close(fresh.stem.bn.running_mean,
                               side["visual.side_pre_bn3d.running_mean"] - side["visual.side_conv1.bias"])


def test_train_mode_batch_statistics_absorb_the_stem_bias(tmp_path):
    backbone = tiny_backbone("clip")
    source = source_model(backbone)
    checkpoint, side = official_checkpoint(source, backbone)
    converted = official.convert_official_checkpoint(checkpoint, backbone, source="ckpt")
    model = create_model("side4video", backbone.info, CLASSES, side_dim=SIDE_DIM)
    model.load_state_dict(converted["model"])
    frames = torch.randn(2, 4, 3, 64, 64)
    stem = model.stem.train()
    out = stem(frames)
    # the official stem in train mode: conv with bias, then BN on the batch statistics
    x = torch.nn.functional.conv3d(frames.transpose(1, 2), side["visual.side_conv1.weight"],
                                   side["visual.side_conv1.bias"], stride=(1, PATCH, PATCH), padding=(1, 0, 0))
    x = torch.nn.functional.batch_norm(x, None, None, side["visual.side_pre_bn3d.weight"],
                                       side["visual.side_pre_bn3d.bias"], training=True)
    torch.testing.assert_close(out, x.permute(0, 2, 3, 4, 1).flatten(2, 3).flatten(0, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family,key,shown", [
    ("clip", "visual.transformer.resblocks.2.mlp.c_fc.weight", "visual.transformer.resblocks.2.mlp.c_fc.weight"),
    ("eva", "visual.blocks.1.attn.q_bias",
     "visual.blocks.1.attn.q_bias (backbone visual.trunk.blocks.1.attn.q_proj.bias)"),
])
def test_a_backbone_tensor_that_differs_is_named(family, key, shown):
    backbone = tiny_backbone(family)
    checkpoint, _ = official_checkpoint(source_model(backbone), backbone)
    state = checkpoint["model_state_dict"]
    state[key] = state[key] + 0.05
    later = "visual.transformer.resblocks.3.ln_1.weight" if family == "clip" else "visual.blocks.3.norm1.weight"
    state[later] = state[later] + 1.0                       # differs too, but comes later in the checkpoint
    with pytest.raises(CheckpointError) as error:
        official.convert_official_checkpoint(checkpoint, backbone, source="run/last_model.pt")
    message = str(error.value)
    assert f"backbone tensor {shown} differs from the frozen backbone" in message and "\n" not in message
    assert "max |difference| 0.05" in message and message.startswith("run/last_model.pt: ")
    state[key] = state[key][:-1]   # a shape difference
    with pytest.raises(CheckpointError, match=r"has shape \([0-9, ]+\) in the official checkpoint but"):
        official.convert_official_checkpoint(checkpoint, backbone, source="ckpt")


def test_a_bf16_backbone_matches_its_fp32_official_copy_within_the_rounding():
    fp32 = tiny_backbone("clip")
    bf16 = tiny_backbone("clip", precision="bf16")
    checkpoint, _ = official_checkpoint(source_model(fp32), fp32)
    assert official.convert_official_checkpoint(checkpoint, bf16)["official"]["backbone_tensors_compared"] == 53
    # one bf16 step (2^-7 relative) is still a rounding; four are a change
    state = checkpoint["model_state_dict"]
    state["visual.class_embedding"] = state["visual.class_embedding"] * (1 + 2 ** -9)
    official.convert_official_checkpoint(checkpoint, bf16)
    state["visual.class_embedding"] = state["visual.class_embedding"] * (1 + 2 ** -5)
    with pytest.raises(CheckpointError, match=r"visual.class_embedding differs .*bfloat16 rounding"):
        official.convert_official_checkpoint(checkpoint, bf16)


def test_wrong_family_width_blocks_and_classes_are_one_line_errors(tmp_path):
    clip, eva = tiny_backbone("clip"), tiny_backbone("eva")
    checkpoint, _ = official_checkpoint(source_model(clip), clip, with_backbone=False)
    path = tmp_path / "clip_official.pt"
    torch.save(checkpoint, path)

    def error_of(call) -> str:
        with pytest.raises(CheckpointError) as error:
            call()
        assert "\n" not in str(error.value)
        return str(error.value)

    assert "for a CLIP backbone, but network.arch tiny_eva is an EVA backbone" in error_of(
        lambda: read_trainable_checkpoint(path, eva))
    narrow = dataclasses.replace(clip.info, width=48)
    other, _ = official_checkpoint(source_model(clip), clip, with_backbone=False)
    other["model_state_dict"].update(to_official_layout(
        randomise(create_model("side4video", narrow, CLASSES, side_dim=SIDE_DIM)).state_dict(), "clip"))
    assert "trained on a backbone of width 48" in error_of(lambda: official.convert_official_checkpoint(other, clip))
    assert "but tiny_clip has width 64" in error_of(lambda: official.convert_official_checkpoint(other, clip))
    deeper = dataclasses.replace(clip.info, num_layers=6)
    deep, _ = official_checkpoint(create_model("side4video", deeper, CLASSES, side_dim=SIDE_DIM), clip,
                                  with_backbone=False)
    assert "with 6 side blocks, but the official code puts 4 on a 4-layer tiny_clip" in error_of(
        lambda: official.convert_official_checkpoint(deep, clip))
    fewer = create_model("side4video", clip.info, 5, side_dim=SIDE_DIM)
    assert f"{path} was trained for {CLASSES} classes, but data.num_classes is 5" in error_of(
        lambda: load_trainable_weights(fewer, path, clip))
    narrower = create_model("side4video", clip.info, CLASSES, side_dim=32)
    assert "has a classifier of width 64, the model 32 (network.side_dim)" in error_of(
        lambda: load_trainable_weights(narrower, path, clip))
    assert "needs the backbone to convert" in error_of(lambda: read_trainable_checkpoint(path))
    broken, _ = official_checkpoint(source_model(clip), clip, with_backbone=False)
    del broken["model_state_dict"]["visual.transformer.side_transformer.2.bn_2.running_var"]
    assert "lacks visual.transformer.side_transformer.2.bn_2.running_var" in error_of(
        lambda: official.convert_official_checkpoint(broken, clip))
    broken["model_state_dict"]["visual.transformer.side_transformer.2.bn_2.running_var"] = torch.ones(SIDE_DIM)
    broken["model_state_dict"]["visual.side_gate"] = torch.ones(1)
    assert "1 side tensor(s) that the CLIP Side4Video layout does not have: visual.side_gate" in error_of(
        lambda: official.convert_official_checkpoint(broken, clip))


def test_what_is_and_is_not_an_official_checkpoint():
    clip = tiny_backbone("clip")
    model = source_model(clip)
    checkpoint, _ = official_checkpoint(model, clip)
    assert official.is_official_checkpoint(checkpoint)
    assert official.is_official_checkpoint(checkpoint["model_state_dict"])        # saved without the wrapper
    assert not official.is_official_checkpoint({"model": model.state_dict(), "epoch": 3})
    assert not official.is_official_checkpoint(model.state_dict())
    assert not official.is_official_checkpoint({"model_state_dict": {"fc.weight": torch.zeros(2, 2)}})


def _tiny_config(tmp_path, weights, family="clip"):
    import yaml

    from tests.support import REPO
    cfg = yaml.safe_load((REPO / "configs/toy/toy_side4video.yaml").read_text())
    cfg["network"].update(arch=str(TINY_CLIP_JSON if family == "clip" else TINY_EVA_JSON), pretrained=str(weights),
                          side_dim=SIDE_DIM)
    cfg["data"].update(num_classes=CLASSES, flip_pairs=None)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_conversion_tool_writes_a_checkpoint_that_loads_without_conversion(tmp_path, capsys):
    from side4video.backbones.tiny import make_tiny_backbone
    from side4video.engine.builders import backbone_from_config, config_for_checkpoint, model_from_config
    from side4video.tools.convert_official import main
    weights = make_tiny_backbone(TINY_CLIP_JSON, tmp_path / "tiny_clip.safetensors")
    config = _tiny_config(tmp_path, weights)
    backbone = create_backbone(TINY_CLIP_JSON, pretrained=str(weights))
    source = source_model(backbone)
    checkpoint, side = official_checkpoint(source, backbone, prefix="module.")
    official_path = tmp_path / "model_best.pt"
    torch.save(checkpoint, official_path)
    out = tmp_path / "converted.pt"
    assert main([str(official_path), "--config", str(config), "--out", str(out)]) == 0
    assert "53 backbone tensors checked" in capsys.readouterr().out

    written = load_checkpoint(out)
    assert not official.is_official_checkpoint(written) and "optimizer_state_dict" not in written
    assert written["config"]["network"]["side_dim"] == SIDE_DIM and written["backbone"]["sha256"]
    cfg = config_for_checkpoint(out, None, [])            # its stored config: no --config needed
    backbone = backbone_from_config(cfg)
    model = model_from_config(cfg, backbone).eval()
    loaded = load_trainable_weights(model, out, backbone, cfg)
    assert "official" in loaded and loaded["official"]["epoch"] == 11
    frames = torch.randn(2, 4, 3, 64, 64)
    ours, tokens = logits_of(model, backbone, frames)
    torch.testing.assert_close(ours, reference_logits("clip", side, tokens, frames), rtol=1e-4, atol=1e-4)

    # a wrong config is found when converting, not later
    assert main([str(official_path), "--config", str(config), "--out", str(tmp_path / "x.pt"),
                 "--opts", "data.num_classes=5"]) == 2
    assert "was trained for 7 classes, but data.num_classes is 5" in capsys.readouterr().err
    assert main([str(out), "--config", str(config), "--out", str(tmp_path / "y.pt")]) == 2
    assert "is not an official Side4Video checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_test_py_runs_an_official_checkpoint_as_it_is(toy_data, tmp_path, capsys):
    """test.py --weights, tools.predict --weights and pretrain: on the file the official trainer wrote
    (module.-prefixed), no conversion step."""
    import json

    from tests.support import run_script, write_toy_config
    config = write_toy_config(tmp_path / "cfg.yaml", toy_data, **{"network.side_dim": SIDE_DIM})
    backbone = create_backbone(TINY_CLIP_JSON, pretrained=str(toy_data / "tiny_clip.safetensors"))
    torch.manual_seed(0)
    model = randomise(create_model("side4video", backbone.info, 8, side_dim=SIDE_DIM))
    checkpoint, _ = official_checkpoint(model, backbone, prefix="module.")
    official_path = tmp_path / "official" / "model_best.pt"
    official_path.parent.mkdir()
    torch.save(checkpoint, official_path)
    result = run_script(["test.py", "--config", str(config), "--weights", str(official_path),
                         "--output", str(tmp_path / "test")])
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "test" / "test.log").read_text()
    assert "official Side4Video checkpoint (CLIP, side width 64, 4 side blocks, 8 classes, epoch 11)" in log
    assert "53 backbone tensors match the frozen tiny_clip" in log and "optimizer state ignored" in log
    results = json.loads((tmp_path / "test" / "results.json").read_text())
    assert results["num_videos"] == 16 and results["checkpoint"]["epoch"] == 11
    # the same predictions as the model the official checkpoint was written from (whose logits are the official
    # forward's: test_official_checkpoint_loads_with_the_official_logits)
    import numpy as np

    from side4video.config import load_config
    from side4video.data import ShardedEvalSampler, collate_eval, create_dataset, create_loader
    from side4video.tasks.views import collect_scores
    cfg = load_config(config)
    dataset = create_dataset(cfg.data, "test", test_crops=1, test_clips=1, seed=cfg.seed)
    loader = create_loader(dataset, batch_size=8, sampler=ShardedEvalSampler(len(dataset)), collate_fn=collate_eval)
    expected = collect_scores(backbone, model.eval(), loader, "cpu", mean=cfg.data.mean, std=cfg.data.std,
                              progress=False, flip_permutation=dataset.flip_permutation())
    tested = np.load(tmp_path / "test" / "scores.npz")
    assert list(tested["video_ids"]) == list(expected.video_ids)
    np.testing.assert_allclose(tested["scores"], expected.scores, rtol=1e-5, atol=1e-6)
    assert expected.scores.max(axis=1).mean() > 0.2   # not near-uniform (1/8): the comparison means something

    # tools.predict --weights takes the same file as it is, and gives that video's test.py scores
    from side4video.tools.predict import main as predict_main
    video = expected.video_ids[0]
    assert predict_main([str(toy_data / "frames" / video), "--config", str(config), "--weights", str(official_path),
                         "--json", "--topk", "8", "--test_crops", "1", "--test_clips", "1"]) == 0
    predicted = np.zeros(8)
    for row in json.loads(capsys.readouterr().out)[0]["predictions"]:
        predicted[row["class_id"]] = row["prob"]
    np.testing.assert_allclose(predicted, expected.scores[0], rtol=1e-5, atol=1e-6)

    # pretrain: the official file starts a fine-tuning run (its side weights, not a fresh init, are the start)
    tuned = run_script(["train.py", "--config", str(config), "--output", str(tmp_path / "tune"), "--opts",
                        f"pretrain={official_path}", "solver.epochs=1", "solver.lr=1e-12", "solver.lr_warmup_step=0"])
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert f"loaded trainable weights from {official_path}" in (tmp_path / "tune" / "train.log").read_text()
    start = load_checkpoint(tmp_path / "tune" / "checkpoints" / "last.pt")["model"]
    reference = model.state_dict()
    # lr ~0: the weights are still the official ones (BatchNorm statistics move in training, so compare weights)
    for key in ("fc.weight", "blocks.0.attn.qkv.weight", "stem.conv.weight"):
        torch.testing.assert_close(start[key], reference[key], rtol=1e-4, atol=1e-5, msg=key)
