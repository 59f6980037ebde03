"""``StreamingRecognizer``: a causal side network recognising actions on a live stream, one frame at a time.

    recognizer = StreamingRecognizer.from_checkpoint("exp/toy_causal/best.pt")
    for frame in camera:                        # RGB uint8 [H, W, 3], any size
        scores = recognizer.push(frame)          # logits [C] of the last T processed frames, or None (skipped)
    recognizer.reset()                           # between videos

Each processed frame costs one frozen-backbone forward of that frame plus the side network's per-frame step;
the temporal state (each causal operation's last frames, the window of per-frame features) is carried in
:class:`~side4video.streaming.step.StreamStep`'s explicit state tensors. Frames are preprocessed as the test
path's centre view (short side scaled by the config's rule, centre crop, normalisation). ``stride`` resamples the
stream to the spacing the model was trained with: every stride-th frame is processed (the first one included).

Exactness: pushing frames one by one gives the scores of :meth:`StreamingRecognizer.forward_offline`, the causal
network's one offline call over the same frames (float tolerance).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.lists import read_annotation_list, read_label_names
from ..data.transforms import EvalViews, normalize_frames, resolve_scale_size
from ..engine.builders import load_for_inference
from ..errors import ConfigError, Side4VideoError
from ..models.inputs import SideInputs
from .step import StreamStep, create_stream_step

logger = logging.getLogger("side4video")


def default_stride(cfg) -> int:
    """The frame spacing the model was trained with: the dense window's sampling rate, or for segment sampling the
    median training video's length over T (when the training list is readable), else 1."""
    frames_per_clip = int(cfg.data.num_segments) * int(cfg.data.seg_length)
    if cfg.data.sampling == "dense":
        return int(cfg.data.sampling_rate)
    try:
        lengths = [r.num_frames for r in read_annotation_list(str(cfg.data.train_list)) if r.num_frames]
    except (OSError, Side4VideoError, TypeError):
        return 1
    if not lengths:
        return 1
    return max(1, int(round(float(np.median(lengths)) / frames_per_clip)))


class StreamingRecognizer:
    """Frame-by-frame recognition with a causal side network (see the module docstring).

    Args:
        step: the streaming step (backbone + causal side network + window head).
        input_size, scale, mean, std: the test path's centre-view preprocessing.
        stride: process every stride-th pushed frame (1: all).
        smoothing: exponential smoothing of the pushed scores' probabilities (0: none), ``p ← s·p + (1-s)·p_new``.
        class_names: optional names of the classes (for printing).
    """

    def __init__(self, step: StreamStep, *, input_size: int, scale, mean: Sequence[float], std: Sequence[float],
                 stride: int = 1, smoothing: float = 0.0, class_names: Sequence[str] | None = None):
        if stride < 1:
            raise ConfigError(f"the stream stride must be at least 1 frame, got {stride}")
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"smoothing must be in [0, 1), got {smoothing}")
        self.step = step.eval()
        self.views = EvalViews(input_size, scale, num_crops=1)
        self.mean, self.std = list(mean), list(std)
        self.stride = int(stride)
        self.smoothing = float(smoothing)
        self.class_names = list(class_names) if class_names else None
        self.device = next(step.model.parameters()).device
        self.reset()

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, config: str | Path | None = None, opts: Sequence[str] = (),
                        device: str | torch.device = "cpu", window: int | None = None, stride: int | None = None,
                        smoothing: float = 0.0, allow_other_backbone: bool = False) -> "StreamingRecognizer":
        """A recognizer for a training checkpoint of a causal side network (its stored config unless ``config``);
        ``window`` defaults to the model's frames per clip, ``stride`` to :func:`default_stride`."""
        cfg, backbone, model = load_for_inference(path, config, opts, device=device,
                                                  allow_other_backbone=allow_other_backbone)
        if not getattr(model, "is_causal", False):
            raise ConfigError(f"{path} holds a model that looks at later frames; streaming needs a side network "
                              f"trained with network.causal: true (e.g. configs/toy/toy_causal.yaml)")
        names = None
        if cfg.data.label_list and Path(str(cfg.data.label_list)).is_file():
            names = read_label_names(str(cfg.data.label_list))
        input_size = int(cfg.data.input_size)
        return cls(create_stream_step(cfg, backbone, model, window), input_size=input_size,
                   scale=resolve_scale_size(cfg.data.scale_size, input_size, str(cfg.data.dataset or "")),
                   mean=cfg.data.mean, std=cfg.data.std, stride=default_stride(cfg) if stride is None else stride,
                   smoothing=smoothing, class_names=names)

    # -- state -------------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream: the state of a fresh recognizer (zeros), frame counter 0, no smoothed scores."""
        self.state = self.step.initial_state()
        self.frames_seen = 0
        self.smoothed: torch.Tensor | None = None

    # -- frames ------------------------------------------------------------------------------------------------------
    def preprocess(self, frames: Any) -> torch.Tensor:
        """RGB uint8 ``[H, W, 3]`` (or ``[F, H, W, 3]``), numpy or tensor → normalised ``[F, 3, S, S]`` (the centre
        view of the test path)."""
        if isinstance(frames, np.ndarray):       # (decoders may hand out read-only arrays)
            frames = np.require(frames, requirements=("C", "W"))
        tensor = torch.as_tensor(frames)
        if tensor.dim() == 3:
            tensor = tensor[None]
        if tensor.dim() != 4 or tensor.shape[-1] != 3 or tensor.dtype != torch.uint8:
            raise ValueError(f"expected RGB uint8 frames [H, W, 3] or [F, H, W, 3], got {tuple(tensor.shape)} "
                             f"{tensor.dtype}")
        views, _ = self.views(tensor.permute(0, 3, 1, 2))
        return normalize_frames(views[0].contiguous(), self.mean, self.std).to(self.device)

    @torch.no_grad()
    def push(self, frame: Any) -> torch.Tensor | None:
        """One frame of the stream → the window's logits ``[C]``, or None for a frame the stride skips."""
        index = self.frames_seen
        self.frames_seen += 1
        if index % self.stride:
            return None
        scores, *self.state = self.step(self.preprocess(frame), *self.state)
        return scores[0]

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Softmax of pushed scores, smoothed over time when ``smoothing`` > 0 (stateful: call once per push)."""
        probs = scores.float().softmax(dim=-1)
        if self.smoothing and self.smoothed is not None:
            probs = self.smoothing * self.smoothed + (1 - self.smoothing) * probs
        self.smoothed = probs
        return probs

    @torch.no_grad()
    def forward_offline(self, frames: Any) -> torch.Tensor:
        """The causal network's offline forward: frames ``[F, H, W, 3]`` (RGB uint8) → per-frame logits ``[F', C]``
        for the frames the stride keeps (F' = ceil(F / stride)), each over the window ending there. One backbone
        call over all kept frames and one side-network call; independent of (and not changing) the stream state."""
        clip = self.preprocess(frames)[::self.stride][None]                   # [1, F', 3, S, S]
        step = self.step
        taps = step.backbone.tap(clip, layers=step.layers, embedding=False)
        inputs = SideInputs(clip, taps.cls_tokens, taps.patch_tokens, taps.layers, None, clip.shape[1])
        features = step.model.frame_features(inputs)
        return step.model.window_logits(features, step.window)[0]


__all__ = ["StreamingRecognizer", "default_stride"]
