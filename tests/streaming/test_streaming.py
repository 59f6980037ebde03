"""StreamingRecognizer: frame-by-frame pushing equals the causal network's offline forward, reset equals fresh,
the stride resamples, a bidirectional checkpoint is refused in one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from side4video.backbones import backbone_identity
from side4video.config import load_config, to_plain_dict
from side4video.engine.builders import backbone_from_config, model_from_config
from side4video.engine.checkpoint import FORMAT
from side4video.errors import ConfigError
from side4video.streaming import StreamingRecognizer, default_stride
from tests.models.test_side_network import randomise
from tests.support import build_workspace

CAUSAL_VARIANTS = {
    "conv": {},
    "tsm": {"temporal_module": "tsm"},
    "conv+tsm_cls": {"side_modules": [{"type": "tsm", "slot": "post_attn", "shift_cls": True}]},
}


def write_checkpoint(tmp_path, name: str, causal: bool = True, **network) -> str:
    """A training-format checkpoint (config stored) of a randomised side network on the workspace's tiny CLIP."""
    ws = build_workspace(tmp_path.parent / "streaming_ws")
    raw = yaml.safe_load(ws.config.read_text())
    raw["network"].update(causal=causal, **network)
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(str(config))
    backbone = backbone_from_config(cfg)
    model = randomise(model_from_config(cfg, backbone, seed=0), seed=3)
    path = tmp_path / f"{name}.pt"
    torch.save({"format": FORMAT, "epoch": 1, "model": model.state_dict(), "backbone": backbone_identity(backbone),
                "head": "side4video", "num_classes": cfg.data.num_classes, "config": to_plain_dict(cfg)}, path)
    return str(path)


def video(frames: int = 9, height: int = 48, width: int = 70, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("variant", CAUSAL_VARIANTS, ids=list(CAUSAL_VARIANTS))
def test_pushing_frame_by_frame_equals_the_offline_forward(tmp_path, variant):
    recognizer = StreamingRecognizer.from_checkpoint(write_checkpoint(tmp_path, variant, **CAUSAL_VARIANTS[variant]),
                                                     stride=1)
    assert recognizer.step.window == 8          # the model's frames per clip
    frames = video()
    offline = recognizer.forward_offline(frames)
    pushed = torch.stack([recognizer.push(frame) for frame in frames])
    assert offline.shape == (9, 8)
    torch.testing.assert_close(pushed, offline, rtol=1e-4, atol=1e-5)
    # frames arrive as tensors too, and the window (8) is full from frame 8 on: frame 9's window drops frame 1
    assert not torch.allclose(pushed[-1], offline[-2])


def test_reset_equals_a_fresh_recognizer_and_the_stride_keeps_every_kth_frame(tmp_path):
    path = write_checkpoint(tmp_path, "conv")
    recognizer = StreamingRecognizer.from_checkpoint(path, stride=2)
    fresh = [s.clone() for s in recognizer.state]
    frames = video(seed=1)
    first = [recognizer.push(torch.from_numpy(frame)) for frame in frames]
    assert [s is None for s in first] == [i % 2 == 1 for i in range(9)]
    kept = torch.stack([s for s in first if s is not None])
    torch.testing.assert_close(kept, recognizer.forward_offline(frames), rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(recognizer.state, fresh))
    recognizer.reset()
    assert recognizer.frames_seen == 0 and recognizer.step.state_names
    assert all(torch.equal(a, b) for a, b in zip(recognizer.state, fresh))
    assert all(torch.count_nonzero(s) == 0 for s in recognizer.state)
    again = [recognizer.push(frame) for frame in frames]
    assert all(a is None and b is None or torch.equal(a, b) for a, b in zip(first, again))


def test_state_names_cover_every_temporal_operation(tmp_path):
    recognizer = StreamingRecognizer.from_checkpoint(write_checkpoint(tmp_path, "tsm_cls", side_modules=[
        {"type": "tsm", "slot": "post_attn", "shift_cls": True}]))
    names = recognizer.step.state_names
    blocks = len(recognizer.step.model.blocks)
    assert names[0] == "stem" and names[-2:] == ["window.features", "window.filled"]
    assert sum(n.endswith(".pre_attn.0.dw") for n in names) == blocks          # the temporal convs
    assert sum(n.endswith(".post_attn.0.cls") for n in names) == blocks        # TSM's class-token shift
    assert sum(n.endswith(".post_attn.0.x") for n in names) == blocks          # TSM's stream shift
    assert sum(n.endswith(".cls") and ".post_attn" not in n for n in names) == blocks   # the causal [CLS] shift
    shapes = recognizer.step.state_shapes
    assert shapes["stem"] == (1, 2, 3, 64, 64) and shapes["window.features"] == (1, 8, 32)


def test_a_bidirectional_checkpoint_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="network.causal: true") as info:
        StreamingRecognizer.from_checkpoint(write_checkpoint(tmp_path, "both", causal=False))
    assert "\n" not in str(info.value)


def test_the_default_stride_is_the_training_spacing(tmp_path):
    ws = build_workspace(tmp_path.parent / "streaming_ws")
    cfg = load_config(str(ws.config), ["data.sampling=dense", "data.sampling_rate=4"])
    assert default_stride(cfg) == 4
    cfg = load_config(str(ws.config))                  # 12-frame toy videos, 8 segments
    assert default_stride(cfg) == round(12 / 8)
    cfg = load_config(str(ws.config), [f"data.train_list={tmp_path / 'missing.txt'}"])
    assert default_stride(cfg) == 1
