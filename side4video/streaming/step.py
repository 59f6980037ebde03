"""One streaming step as a pure tensor function: a frame and the state in, scores and the new state out.

:class:`StreamStep` is what the streaming runtime runs and what ``side4video export --mode stream`` exports: the
frozen backbone on the one frame, the causal side network's per-frame step with every temporal operation's
remembered frames passed in and out explicitly (``TemporalHistory``), and the head over a window of the last T
per-frame features. The state is a fixed list of named tensors (:attr:`StreamStep.state_names`, batch 1), all
zeros at the start of a stream, so a reset is zeros and an exported graph needs no other initialisation.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones.frozen import FrozenEncoder
from ..errors import ConfigError
from ..models.inputs import SideInputs
from ..models.side_network import SideNetwork
from ..modules import TemporalHistory

WINDOW_FEATURES = "window.features"   # [1, T, D]: the per-frame features of the last T frames, oldest first
WINDOW_FILLED = "window.filled"       # [1, T]: 1 where the window holds a frame (fewer than T at the start)


class StreamStep(nn.Module):
    """``forward(frame, *state) → (scores, *new_state)``.

    ``frame``: ``[1, 3, H, W]`` float, normalised as the test path (``StreamingRecognizer.preprocess``); ``state``:
    the tensors named :attr:`state_names`, in that order (:meth:`initial_state` at the start); ``scores``: the
    logits ``[1, C]`` of the window of the last ``window`` frames (fewer at the start): the head's average of their
    per-frame features, then the classifier, as the model averages a clip of T frames.
    """

    def __init__(self, backbone: FrozenEncoder, model: SideNetwork, window: int):
        super().__init__()
        if not isinstance(model, SideNetwork) or not model.is_causal:
            raise ConfigError("streaming needs a causal side network (network.head: side4video with network.causal: "
                              "true); this model looks at later frames")
        if window < 1:
            raise ConfigError(f"the streaming window must be at least 1 frame, got {window}")
        self.backbone = backbone
        self.model = model
        self.window = int(window)
        self.layers = list(model.backbone_layers)
        size = backbone.info.image_size
        self.image_size = size
        probe: dict[str, torch.Tensor] = {}        # one step on a blank frame names and shapes the history
        parameter = next(model.parameters())
        with torch.no_grad():
            self.frame_features(torch.zeros(1, 3, size, size, device=parameter.device), probe)
        self.history_names = list(probe)
        self.state_names = [*self.history_names, WINDOW_FEATURES, WINDOW_FILLED]
        self._shapes = [tuple(probe[name].shape) for name in self.history_names]
        self._shapes += [(1, self.window, model.side_dim), (1, self.window)]
        self._dtypes = [probe[name].dtype for name in self.history_names] + [parameter.dtype, parameter.dtype]

    @property
    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(zip(self.state_names, self._shapes))

    def initial_state(self) -> list[torch.Tensor]:
        """Zeros of every state tensor: the state of a stream before its first frame."""
        device = next(self.model.parameters()).device
        return [torch.zeros(shape, dtype=dtype, device=device) for shape, dtype in zip(self._shapes, self._dtypes)]

    def frame_features(self, frame: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[1, 3, H, W]`` → the frame's side feature ``[1, 1, D]``; ``store`` (the history) updated in place."""
        frames = frame[:, None]
        taps = self.backbone.tap(frames, layers=self.layers, embedding=False)
        inputs = SideInputs(frames, taps.cls_tokens, taps.patch_tokens, taps.layers, None, 1)
        return self.model.frame_features(inputs, TemporalHistory(store))

    def forward(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(state) != len(self.state_names):
            raise ValueError(f"expected {len(self.state_names)} state tensors ({', '.join(self.state_names)}), "
                             f"got {len(state)}")
        store = dict(zip(self.history_names, state[:len(self.history_names)]))
        feature = self.frame_features(frame, store)
        features, filled = state[-2], state[-1]
        features = torch.cat([features[:, 1:], feature.to(features.dtype)], dim=1)
        filled = torch.cat([filled[:, 1:], torch.ones_like(filled[:, :1])], dim=1)
        pooled = (features * filled[..., None]).sum(dim=1) / filled.sum(dim=1, keepdim=True)
        scores = self.model.fc(pooled)
        return (scores, *(store[name] for name in self.history_names), features, filled)


def create_stream_step(cfg, backbone: FrozenEncoder, model: nn.Module, window: int | None = None) -> StreamStep:
    """The streaming step of a trained model; ``window`` defaults to the frames per clip the model trained on."""
    return StreamStep(backbone, model, int(window or int(cfg.data.num_segments) * int(cfg.data.seg_length)))


__all__ = ["StreamStep", "create_stream_step", "WINDOW_FEATURES", "WINDOW_FILLED"]
