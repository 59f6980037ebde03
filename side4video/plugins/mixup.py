"""Mixup / CutMix on video clips (timm's ``Mixup``) as a training plugin."""
from __future__ import annotations

from timm.data import Mixup

from ..errors import ConfigError
from ..tasks import TrainBatch
from .base import PLUGINS, PluginContext, TrainPlugin


@PLUGINS.register("mixup")
class MixupPlugin(TrainPlugin):
    """Mixup / CutMix on video clips with timm's ``Mixup`` (soft targets, label smoothing folded in).

    timm's CutMix cuts ``x[:, :, y0:y1, x0:x1]``, i.e. the last two dims of a 4-D image batch. A clip batch
    ``[B, T, 3, H, W]`` is therefore viewed as ``[B, T·3, H, W]``: the same box on every frame and colour channel
    of a clip, and the label weight is the box's true area fraction of H×W.

    ``smoothing`` (None: the run's ``solver.smoothing``) is folded into the soft targets.
    """

    name = "mixup"

    def __init__(self, mixup: float = 0.8, cutmix: float = 1.0, prob: float = 1.0, switch_prob: float = 0.5,
                 smoothing: float | None = None):
        self.options = dict(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob)
        self.smoothing = smoothing
        self.mixup = None

    def setup(self, ctx: PluginContext) -> None:
        # the run's label smoothing unless the plugin sets its own (soft targets carry it: the loss cannot add it)
        solver = getattr(ctx.cfg, "solver", None)
        smoothing = self.smoothing if self.smoothing is not None else float(getattr(solver, "smoothing", 0.0))
        self.mixup = Mixup(num_classes=ctx.num_classes, label_smoothing=smoothing, **self.options)
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
