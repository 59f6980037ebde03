"""The measured methods and their training step.

Every method but the floor trains through the engine's one step, :func:`side4video.engine.step.train_step`, on a
:class:`~side4video.engine.backends.TorchBackend` (fp32, or bf16 autocast) with the classification task and, for
SV-Mix, the plugin set up as the trainer sets it up. The full fine-tuning and adapter baselines are models of a few
lines here that read ``SideInputs.frames`` and tap no layer, so the same step serves them (their "tap" assembles
the frames and runs nothing).

Phase times come from inside that step: :class:`TimedBackend` (a ``TorchBackend``) times its ``forward`` (the model
under autocast), ``backward`` and ``step`` (the optimizer), and :class:`TimedAssembler` the frozen backbone's tap;
each phase starts and ends with a device synchronisation. What is left of the step ("other") is the plugins' own
work (SV-Mix's feature pass and mask branch), the losses and Python.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from side4video.backbones import BackboneInfo, FrozenEncoder, create_backbone, create_open_clip_model, resolve_arch
from side4video.engine.backends import TorchBackend
from side4video.engine.memory import SavedTensorMeter, storage_pointers
from side4video.engine.optim import create_optimizer, create_scheduler
from side4video.engine.step import StepParts, forward_loss, train_step
from side4video.models import SideInputs, TapAssembler, count_parameters, create_model
from side4video.modules.functional import temporal_depthwise
from side4video.plugins import PluginContext, TrainPlugin, create_plugins, set_up_plugins
from side4video.tasks import ClassificationTask, TrainBatch

from .meters import RecordingMeter

# name → (label, spec). "kind" selects the model; side options go to create_model("side4video", ...).
METHODS: dict[str, tuple[str, dict[str, Any]]] = {}
for _base in ("side", "light"):
    for _ckpt in (False, True):
        for _recompute in (True, False):
            _name = _base + ("-ckpt" if _ckpt else "") + ("" if _recompute else "-norecompute")
            _label = ("Side4Video D={%s_dim}" % _base + (" + checkpointing" if _ckpt else "")
                      + ("" if _recompute else ", recompute=False"))
            METHODS[_name] = (_label, dict(kind="side", dim=f"{_base}_dim", grad_checkpointing=_ckpt,
                                           recompute=_recompute))
# SV-Mix pays for its mixed volume in pixels: a clean-clip feature pass, the mixed clip's tap and the mask branch
# through the frozen backbone (with autograd to the pixels) and the EMA model.
METHODS["side-svmix"] = ("Side4Video D={side_dim} + SV-Mix",
                         dict(kind="side", dim="side_dim", grad_checkpointing=False, recompute=True,
                              plugins=("svmix",)))
# torch.compile of the side network (network.compile): opt-in here, its compilation takes minutes on a CPU.
METHODS["side-compile"] = ("Side4Video D={side_dim}, torch.compile",
                           dict(kind="side", dim="side_dim", grad_checkpointing=False, recompute=True, compile=True))
OPT_IN = {"side-compile"}            # not part of --methods all
METHODS["full_ft"] = ("full fine-tuning (image tower + linear)", dict(kind="full_ft"))
METHODS["adapter"] = ("ST-Adapter-style adapters (frozen backbone, backprop through it)", dict(kind="adapter"))
METHODS["probe"] = ("linear probe (frame_avg, frozen features)", dict(kind="probe"))
METHODS["floor"] = ("floor: frozen forward, no grad", dict(kind="floor"))
DEFAULT_SCALING = ["side", "side-ckpt", "light", "light-ckpt", "full_ft"]
PHASES = ("tap", "forward", "backward", "optimizer")


def method_label(name: str, cfg: dict[str, Any]) -> str:
    return METHODS[name][0].format(**cfg)


def quiet() -> None:
    """Random-weight and deprecation warnings would drown the progress lines."""
    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    warnings.filterwarnings("ignore", category=FutureWarning)


def run_device(cfg: dict[str, Any]) -> torch.device:
    if cfg["device"] == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg["device"])


def random_clips(cfg: dict[str, Any], batch: int, frames: int, info: BackboneInfo, device: torch.device,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised-looking clips ``[B, T, 3, H, W]`` and labels, the same for every method (seeded)."""
    size = info.image_size
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch, frames, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, cfg["classes"], (batch,), generator=generator).to(device)
    return clips, labels


def check_size(cfg: dict[str, Any], info: BackboneInfo) -> None:
    if cfg.get("size") and int(cfg["size"]) != info.image_size:
        raise SystemExit(f"--size {cfg['size']}: backbone {info.arch} takes {info.image_size} px images "
                         f"(its position embedding is {info.grid_size} x {info.grid_size} patches)")


def build_frozen_backbone(cfg: dict[str, Any], precision: str, device: torch.device) -> FrozenEncoder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_backbone(cfg["arch"], pretrained=False, precision=precision, device=device)


def solver_namespace(precision: str, plugins: Sequence[str] = ()) -> SimpleNamespace:
    """The solver fields the optimizer, the schedule and the plugins read: AdamW at a constant lr (a ``step``
    schedule without steps), no mixup, the given plugins."""
    return SimpleNamespace(lr=1e-3, weight_decay=0.02, weight_decay_all=False, lr_mult={}, optim="adamw",
                           betas=(0.9, 0.999), eps=1e-8, momentum=0.9, type="step", lr_steps=[], lr_decay=1.0,
                           lr_warmup_step=0, epochs=1, min_lr=0.0, smoothing=0.0, precision=precision, mixup=0.0,
                           cutmix=0.0, plugins=[{"type": name} for name in plugins])


# ------------------------------------------------------------------------------------------------------------------
# phase timing inside the engine's step
# ------------------------------------------------------------------------------------------------------------------
class PhaseClock:
    """Seconds per phase of one step. A phase starts and ends with a device synchronisation, so that on a GPU it
    is the phase's own work, not the time to launch it or to wait for the one before."""

    def __init__(self, device: torch.device):
        self.device = device
        self.phases: dict[str, float] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, key: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.phases[key] = self.phases.get(key, 0.0) + time.perf_counter() - start


class TimedAssembler:
    """A clip assembler that times the one it wraps: the frozen backbone's tap inside the step."""

    def __init__(self, assembler: Any, clock: PhaseClock):
        self.assembler, self.clock = assembler, clock

    def __call__(self, backbone: FrozenEncoder, frames: torch.Tensor, **kwargs: Any) -> SideInputs:
        with self.clock.phase("tap"):
            return self.assembler(backbone, frames, **kwargs)


class TimedBackend(TorchBackend):
    """The plain-torch backend with its model forward, backward and optimizer step timed."""

    def __init__(self, *args: Any, clock: PhaseClock, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.clock = clock

    def forward(self, inputs: SideInputs) -> torch.Tensor:
        with self.clock.phase("forward"):
            return super().forward(inputs)

    def backward(self, loss: torch.Tensor) -> None:
        with self.clock.phase("backward"):
            super().backward(loss)

    def step(self) -> None:
        with self.clock.phase("optimizer"):
            super().step()


# ------------------------------------------------------------------------------------------------------------------
# the baselines: models that read the frames of SideInputs and tap no layer (the step's tap runs nothing for them)
# ------------------------------------------------------------------------------------------------------------------
class FineTuned(nn.Module):
    """The whole open_clip image tower trains (fp32 master weights): frame-averaged embeddings → linear."""
    backbone_layers: list[int] = []
    needs_embedding = False

    def __init__(self, visual: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.visual, self.fc = visual, nn.Linear(embed_dim, num_classes)

    def forward(self, inputs: SideInputs) -> torch.Tensor:
        frames = inputs.frames
        b, t = frames.shape[:2]
        embedding = self.visual(frames.flatten(0, 1))
        return self.fc(embedding.reshape(b, t, -1).mean(1))


def make_fine_tuned(cfg: dict[str, Any], info: BackboneInfo, device: torch.device) -> FineTuned:
    """A fresh image tower of the backbone's architecture (random weights, all trainable) with a linear head."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = create_open_clip_model(resolve_arch(cfg["arch"]).model_cfg)
    visual = clip.visual
    del clip
    visual.requires_grad_(True)
    return FineTuned(visual, info.embed_dim, cfg["classes"]).to(device).train()


class STAdapter(nn.Module):
    """``x + up(DWConv_{3x1x1}(down(x)))`` on the patch tokens (class token untouched, no activation)."""

    def __init__(self, width: int, hidden: int, num_blocks: int, batch_first: bool):
        super().__init__()
        self.batch_first = batch_first
        self.down = nn.Linear(width, hidden)
        self.conv_weight = nn.Parameter(torch.randn(hidden, 3) * 3 ** -0.5)
        self.conv_bias = nn.Parameter(torch.zeros(hidden))
        self.up = nn.Linear(hidden, width)
        nn.init.normal_(self.up.weight, std=0.02 / math.sqrt(num_blocks))
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        if not self.batch_first:
            x = x.transpose(0, 1)
        cls, patches = x[:, :1], x[:, 1:]
        h = temporal_depthwise(self.down(patches), self.conv_weight, self.conv_bias, num_frames)
        out = torch.cat([cls, patches + self.up(h).to(patches.dtype)], dim=1)
        return out if self.batch_first else out.transpose(0, 1)


class AdapterModel(nn.Module):
    """ST-Adapter (Pan et al. 2022) style: an :class:`STAdapter` (bottleneck ``ratio · W``) before every block of
    the frozen tower. The tower is frozen, but the gradient of every adapter below the top flows through it, so its
    activations are saved. Frame-averaged embeddings → linear."""
    backbone_layers: list[int] = []
    needs_embedding = False

    def __init__(self, backbone: FrozenEncoder, num_classes: int, ratio: float):
        super().__init__()
        info = backbone.info
        visual = backbone.model.visual
        if hasattr(visual, "trunk"):
            blocks, batch_first = list(visual.trunk.blocks), True
        else:
            blocks, batch_first = list(visual.transformer.resblocks), getattr(visual.transformer, "batch_first", True)
        hidden = max(8, round(info.width * ratio))
        self.adapters = nn.ModuleList(STAdapter(info.width, hidden, len(blocks), batch_first) for _ in blocks)
        self.fc = nn.Linear(info.embed_dim, num_classes)
        # a plain attribute, not a submodule: the frozen tower must not join this model's parameters, state or .to()
        object.__setattr__(self, "frozen", backbone)
        self._frames: int | None = None   # set only while this model runs: the encoder's own forward stays plain
        self._handles = [block.register_forward_pre_hook(self._hook(adapter))
                         for block, adapter in zip(blocks, self.adapters)]

    def _hook(self, adapter: STAdapter):
        def hook(module, args):
            if self._frames is None:
                return None
            return (adapter(args[0], self._frames), *args[1:])
        return hook

    def forward(self, inputs: SideInputs) -> torch.Tensor:
        frames = inputs.frames
        b, t = frames.shape[:2]
        self._frames = t
        try:   # grad enabled: backprop through the frozen tower
            embedding = self.frozen.model.visual(frames.flatten(0, 1).to(self.frozen.dtype))
        finally:
            self._frames = None
        return self.fc(embedding.reshape(b, t, -1).mean(1).to(self.fc.weight.dtype))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


# ------------------------------------------------------------------------------------------------------------------
# one method
# ------------------------------------------------------------------------------------------------------------------
class Method:
    """One method's model, plugins and optimizer backend, built in the current process. Its training step is the
    engine's :func:`train_step`; the floor has no step, only the frozen inference forward."""

    def __init__(self, name: str, cfg: dict[str, Any], precision: str, device: torch.device,
                 backbone: FrozenEncoder | None = None):
        self.name, self.cfg, self.precision, self.device = name, cfg, precision, device
        self.spec = METHODS[name][1]
        self.kind: str = self.spec["kind"]
        self.backbone = backbone if backbone is not None else build_frozen_backbone(cfg, precision, device)
        self.uses_backbone = self.kind != "full_ft"
        torch.manual_seed(0)
        self.model = self._model(cfg, device)
        self.clock = PhaseClock(device)
        self.task = ClassificationTask(cfg["classes"])
        self.plugins: list[TrainPlugin] = []
        self.backend: TimedBackend | None = None
        self.parts: StepParts | None = None
        trained = None
        if self.model is not None:
            # as the trainer and the ablation runner: plugins set up on the model, the optimizer over both
            solver = solver_namespace(precision, self.spec.get("plugins", ()))
            run_cfg = SimpleNamespace(solver=solver)
            self.plugins = create_plugins(run_cfg)
            context = PluginContext(cfg=run_cfg, model=self.model, backbone=self.backbone, assembler=TapAssembler(),
                                    num_classes=cfg["classes"], device=device, task=self.task)
            trained, lr_mult = set_up_plugins(self.plugins, context, solver.lr_mult)
            if self.spec.get("compile"):
                # as the trainer does for network.compile, after the plugins' set-up (an EMA copy stays plain);
                # the first steps compile
                self.model.compile()
            optimizer = create_optimizer(trained, solver, lr_mult=lr_mult, prefix="model.")
            self.backend = TimedBackend(trained, optimizer, create_scheduler(optimizer, solver, steps_per_epoch=1),
                                        device=device, precision=precision, clock=self.clock)
            self.parts = StepParts(backbone=self.backbone, model=self.model, task=self.task,
                                   assembler=TimedAssembler(TapAssembler(), self.clock), plugins=self.plugins)
        self.trainable = count_parameters(trained) if trained is not None else 0
        self.exclude = storage_pointers(self.backbone.model, trained,
                                        *(getattr(p, "ema", None) for p in self.plugins))
        names: dict[int, str] = {}
        for root, module in (("backbone", self.backbone.model), ("model", self.model)):
            if module is not None:
                for sub_name, sub in module.named_modules():
                    names.setdefault(id(sub), f"{root}.{sub_name}" if sub_name else root)
        self.module_names = names

    def _model(self, cfg: dict[str, Any], device: torch.device) -> nn.Module | None:
        info = self.backbone.info
        if self.kind == "side":
            return create_model("side4video", info, cfg["classes"], side_dim=cfg[self.spec["dim"]],
                                grad_checkpointing=self.spec["grad_checkpointing"],
                                recompute=self.spec["recompute"]).to(device).train()
        if self.kind == "probe":
            return create_model("frame_avg", info, cfg["classes"]).to(device).train()
        if self.kind == "full_ft":
            return make_fine_tuned(cfg, info, device)
        if self.kind == "adapter":
            return AdapterModel(self.backbone, cfg["classes"], cfg["adapter_ratio"]).to(device).train()
        return None

    def batch(self, frames: torch.Tensor, labels: torch.Tensor) -> TrainBatch:
        """The step's batch, made by the task as the trainer's ``make_batch`` does (the clips are normalised)."""
        return self.task.train_batch({"label": labels}, frames, None, self.device)

    def floor(self, frames: torch.Tensor) -> None:
        """The frozen backbone's inference forward (no grad, its own precision)."""
        self.backbone.encode_image(frames)
        self.clock.sync()

    def step(self, frames: torch.Tensor, labels: torch.Tensor, meter: RecordingMeter | None = None) -> dict[str, float]:
        """One training step (the engine's), the saved tensors of its forward and loss counted by ``meter``;
        returns its phase times (see the module docstring) and ``total``, the whole step."""
        if self.parts is None:    # the floor
            start = time.perf_counter()
            with meter.hooks() if meter is not None else contextlib.nullcontext():
                self.floor(frames)
            seconds = time.perf_counter() - start
            return {"tap": seconds, "total": seconds}
        measure = (lambda: meter.measuring(self.module_names)) if meter is not None else None
        self.clock.phases = dict.fromkeys(PHASES, 0.0)
        batch = self.batch(frames, labels)
        self.clock.sync()
        start = time.perf_counter()
        train_step(self.parts, batch, self.backend, measure=measure)
        self.clock.sync()
        total = time.perf_counter() - start
        phases = dict(self.clock.phases)
        phases["other"] = max(total - sum(phases.values()), 0.0)
        phases["total"] = total
        return phases

    def saved_bytes_only(self, frames: torch.Tensor, labels: torch.Tensor, inputs: SideInputs | None = None) -> int:
        """Saved bytes of the step's forward and loss alone (no backward): the scaling rows. ``inputs``: SideInputs
        tapped already (shared by the methods that read the same layers)."""
        meter = SavedTensorMeter(self.exclude)
        with meter.hooks():
            if self.parts is None:
                self.floor(frames)
            else:
                loss = forward_loss(self.parts, self.batch(frames, labels), self.backend.forward, inputs)
                del loss
        return meter.bytes

    def backbone_only_bytes(self) -> int:
        """Weights of the frozen backbone when the method itself does not need it (only the floor timing does)."""
        if self.uses_backbone:
            return 0
        return sum(t.numel() * t.element_size() for t in [*self.backbone.model.parameters(),
                                                            *self.backbone.model.buffers()])

    def close(self) -> None:
        """Take the adapters' hooks off the frozen tower (it may be shared with other methods)."""
        if isinstance(self.model, AdapterModel):
            self.model.remove()


__all__ = ["METHODS", "OPT_IN", "DEFAULT_SCALING", "Method", "method_label", "quiet", "run_device", "random_clips",
           "check_size", "build_frozen_backbone", "solver_namespace", "PhaseClock", "TimedAssembler", "TimedBackend"]
