"""Mixup / CutMix on video clips (timm's ``Mixup``) as a training plugin."""
from __future__ import annotations

from ...errors import ConfigError
from .base import PluginContext, TrainBatch, TrainPlugin


class MixupPlugin(TrainPlugin):
    """Mixup / CutMix on video clips with timm's ``Mixup`` (soft targets, label smoothing folded in).

    timm's CutMix cuts ``x[:, :, y0:y1, x0:x1]``, i.e. the last two dims of a 4-D image batch. A clip batch
    ``[B, T, 3, H, W]`` is therefore viewed as ``[B, T·3, H, W]``: the same box on every frame and colour channel
    of a clip, and the label weight is the box's true area fraction of H×W.
    """

    name = "mixup"

    def __init__(self, mixup: float = 0.8, cutmix: float = 1.0, prob: float = 1.0, switch_prob: float = 0.5,
                 smoothing: float = 0.0):
        self.options = dict(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob,
                            label_smoothing=smoothing)
        self.mixup = None

    def setup(self, ctx: PluginContext) -> None:
        from timm.data import Mixup
        self.mixup = Mixup(num_classes=ctx.num_classes, **self.options)
        return None

    def on_batch(self, batch: TrainBatch) -> TrainBatch:
        frames = batch.frames
        if frames.shape[0] % 2:
            raise ConfigError(f"mixup/cutmix needs an even number of clips per process, got {frames.shape[0]} "
                              "(data.batch_size × data.num_sample)")
        b, t, c, h, w = frames.shape
        flat = frames.reshape(b, t * c, h, w)
        flat, targets = self.mixup(flat, batch.labels)
        batch.frames, batch.targets = flat.reshape(b, t, c, h, w), targets
        return batch
