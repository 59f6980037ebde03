"""Training memory and speed per step: the Side4Video side network against full fine-tuning, an adapter baseline,
the linear probe and the frozen forward, all measured in one run.

    python benchmarks/train_memory_speed.py --arch ViT-B-16 --frames 8 --size 224 --batch 2 \
        --precision fp32 bf16 [--methods all] [--steps 3] [--json out.json] [--output out.md]
    python benchmarks/train_memory_speed.py --smoke          # tiny backbone, every method, a few seconds

What is measured for every method, per training step (random weights; the step is the trainer's: frozen-backbone
tap → model under autocast → cross-entropy → backward → AdamW step, see ``side4video/engine/trainer.py``):

* **saved for backward** — exact and device-independent: the distinct tensor storages autograd keeps during the
  forward pass, seen through ``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage pointer, each
  storage's full size counted once. Parameters and buffers are left out (they live anyway and are counted in
  "params+grads+AdamW"); autocast's low-precision copies of the weights are counted (they are extra memory).
  Inputs that backward needs (the frozen backbone's tapped tokens, a checkpointed block's input) are counted.
* **peak memory** — CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps. CPU: the process's peak
  resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before the timed steps) minus the resident set of
  the runtime (after the imports, before any tensor), in a fresh process per method (``--isolate``, the default:
  forked on CPU, spawned on CUDA; ``--no-isolate``, used by ``--smoke``, is approximate: freed memory kept by
  the allocator of an earlier method hides part of a later one's peak). The peak is taken over all steps (warm-up
  and timed) after the models are built. It includes everything: the frozen backbone's weights, the trainable
  weights, gradients, AdamW state, activations, the allocator's slack and, on CPU, the code pages and buffers
  the first kernels fault in (the floor row shows that constant). Full fine-tuning does not need the frozen
  backbone that the paired floor timing uses: its weights are subtracted.
* **step time** — median of ``--steps`` timed steps after ``--warmup`` warm-up steps; every timed step is paired
  with one frozen inference forward (the floor) in the same process, alternating the order, and the ratio to the
  floor is the median of the per-pair ratios (robust to a machine whose load changes during the run).

Methods: ``side``/``light`` (Side4Video, D=320 / D=128), each plain, ``-ckpt`` (``grad_checkpointing``) and
``-norecompute`` (``recompute=False``: norms, GELU, the depthwise conv and the tap LayerNorm outputs are kept
instead of recomputed in backward); ``full_ft`` (the same ViT image tower trainable, frame-averaged embeddings →
linear); ``adapter`` (ST-Adapter-style bottleneck adapters before every block of the frozen backbone, gradients
through it); ``probe`` (the frozen-feature linear probe, ``frame_avg``); ``floor`` (the frozen backbone's
inference forward, no grad). Then bytes-only scaling rows (frames, batch) and the multi-view test path.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))
from side4video.engine.memory import SavedTensorMeter, storage_pointers  # noqa: E402
TINY_CLIP = REPO / "side4video" / "assets" / "tiny_clip.json"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "train_memory_speed.md"
MIB = 2 ** 20

# name → (label, spec). "kind" selects the builder; side options go to create_model("side4video", ...).
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
METHODS["side-svmix"] = ("Side4Video D={side_dim} + SV-Mix", dict(kind="side", dim="side_dim", grad_checkpointing=False,
                                                                 recompute=True, plugins=("svmix",)))
# torch.compile of the side network (network.compile): opt-in here, its compilation takes minutes on a CPU.
METHODS["side-compile"] = ("Side4Video D={side_dim}, torch.compile", dict(kind="side", dim="side_dim",
                                                                          grad_checkpointing=False, recompute=True,
                                                                          compile=True))
OPT_IN = {"side-compile"}            # not part of --methods all
METHODS["full_ft"] = ("full fine-tuning (image tower + linear)", dict(kind="full_ft"))
METHODS["adapter"] = ("ST-Adapter-style adapters (frozen backbone, backprop through it)", dict(kind="adapter"))
METHODS["probe"] = ("linear probe (frame_avg, frozen features)", dict(kind="probe"))
METHODS["floor"] = ("floor: frozen forward, no grad", dict(kind="floor"))
DEFAULT_SCALING = ["side", "side-ckpt", "light", "light-ckpt", "full_ft"]

# The goals: (what, method, quantity, bound).
GOALS = [
    ("saved bytes per clip, side D={side_dim} (fp32, plain) vs full fine-tuning", "fp32", "side", "saved_vs_ft", 0.35),
    ("saved bytes per clip, side D={side_dim} + checkpointing (fp32) vs full fine-tuning", "fp32", "side-ckpt",
     "saved_vs_ft", 0.10),
    ("saved bytes per clip, side D={side_dim} + checkpointing, bf16 [MiB]", "bf16", "side-ckpt", "saved_per_clip_mib", 80.0),
    ("step time vs frozen forward, side D={side_dim}", "fp32", "side", "time_vs_floor", 1.7),
    ("step time vs frozen forward, light D={light_dim}", "fp32", "light", "time_vs_floor", 1.3),
    ("step time vs frozen forward, side D={side_dim} + checkpointing", "fp32", "side-ckpt", "time_vs_floor", 2.0),
    ("step time vs frozen forward, light D={light_dim} + checkpointing", "fp32", "light-ckpt", "time_vs_floor", 2.0),
]


# ------------------------------------------------------------------------------------------------------------------
# memory accounting
# ------------------------------------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class HostPeak:
    """Peak resident set of this process since :meth:`reset` (``VmHWM`` after writing 5 to ``/proc/self/clear_refs``;
    else ``ru_maxrss``, the whole process's peak)."""

    def __init__(self):
        self.resettable = False

    def reset(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.resettable = True
        except OSError:
            self.resettable = False

    @staticmethod
    def current() -> int:
        kib = _proc_status_kib("VmRSS")
        if kib is None:
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return kib * 1024

    def peak(self) -> int:
        kib = _proc_status_kib("VmHWM") if self.resettable else None
        if kib is None:
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return kib * 1024

    @property
    def method(self) -> str:
        return "VmHWM (reset via /proc/self/clear_refs)" if self.resettable else "ru_maxrss (fresh process)"


class RecordingMeter(SavedTensorMeter):
    """The exact meter; with ``record``, each storage is also described by the op that created the tensor (its
    ``grad_fn``), its shape and dtype, the module it was saved in and the source lines that saved it — for finding
    where the bytes go."""

    def __init__(self, exclude: set[int], module_stack: list[str] | None = None, record: bool = False):
        super().__init__(exclude)
        self.records: dict[int, dict[str, Any]] = {}
        self.module_stack = module_stack
        self.record = record

    def on_new_storage(self, tensor, nbytes: int) -> None:
        if self.record:
            self.records[tensor.untyped_storage().data_ptr()] = self._describe(tensor, nbytes)

    def _describe(self, tensor, nbytes: int) -> dict[str, Any]:
        fn = tensor.grad_fn
        if fn is None:
            op = "leaf (requires grad)" if tensor.requires_grad else "input / no-grad tensor"
        else:
            op = type(fn).__name__
            if op == "ToCopyBackward0" and any(type(n).__name__ == "AccumulateGrad" for n, _ in fn.next_functions
                                               if n is not None):
                op = "autocast weight copy"
        module = self.module_stack[-1] if self.module_stack else ""
        return {"op": op, "shape": list(tensor.shape), "dtype": str(tensor.dtype).replace("torch.", ""),
                "bytes": nbytes, "module": module, "site": _call_site()}


_METER_FILE = sys.modules[SavedTensorMeter.__module__].__file__


def _call_site(depth: int = 2) -> str:
    """The innermost ``depth`` frames outside torch and this meter: ``file:line function``."""
    frame = sys._getframe(2)
    sites = []
    torch_dir = os.sep + "torch" + os.sep
    while frame is not None and len(sites) < depth:
        name = frame.f_code.co_filename
        inside_meter = name == _METER_FILE or (name == __file__ and frame.f_code.co_name in ("on_new_storage", "_describe"))
        if torch_dir not in name and not inside_meter:
            sites.append(f"{Path(name).name}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " <- ".join(sites)


@contextlib.contextmanager
def module_tracking(names: dict[int, str], stack: list[str]):
    """Keep ``stack[-1]`` = the qualified name of the module whose forward is running."""
    from torch.nn.modules import module as module_mod

    def pre(mod, args):
        stack.append(names.get(id(mod), type(mod).__name__))

    def post(mod, args, out):
        if stack:
            stack.pop()

    handles = [module_mod.register_module_forward_pre_hook(pre), module_mod.register_module_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def group_records(records: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """Sum storages over blocks: module names with their block index replaced by ``*``."""
    groups: dict[tuple, dict[str, Any]] = {}
    for rec in records:
        module = re.sub(r"\.\d+(?=\.|$)", ".*", rec["module"])
        site = rec["site"]
        key = (module, rec["op"], tuple(rec["shape"]), rec["dtype"], site)
        entry = groups.setdefault(key, {"module": module, "op": rec["op"], "shape": rec["shape"],
                                        "dtype": rec["dtype"], "site": site, "count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += rec["bytes"]
    return sorted(groups.values(), key=lambda e: -e["bytes"])[:top]


# ------------------------------------------------------------------------------------------------------------------
# the methods
# ------------------------------------------------------------------------------------------------------------------
def _quiet():
    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    warnings.filterwarnings("ignore", category=FutureWarning)


def build_frozen_backbone(cfg: dict, precision: str, device):
    from side4video.backbones import create_backbone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_backbone(cfg["arch"], pretrained=False, precision=precision, device=device)


def solver_namespace(cfg: dict) -> SimpleNamespace:
    return SimpleNamespace(lr=1e-3, weight_decay=0.02, weight_decay_all=False, lr_mult={}, optim="adamw",
                           betas=(0.9, 0.999), eps=1e-8, momentum=0.9)


def _nn():
    import torch
    from torch import nn
    return torch, nn


def make_fine_tuned(cfg: dict, info, device):
    """The whole open_clip image tower trains (fp32 master weights): frame-averaged embeddings → linear."""
    _, nn = _nn()
    from side4video.backbones import build_open_clip_model, resolve_arch

    class FineTuned(nn.Module):
        backbone_layers: list[int] = []
        needs_embedding = False

        def __init__(self, visual, embed_dim, num_classes):
            super().__init__()
            self.visual, self.fc = visual, nn.Linear(embed_dim, num_classes)

        def forward(self, frames):
            b, t = frames.shape[:2]
            embedding = self.visual(frames.flatten(0, 1))
            return self.fc(embedding.reshape(b, t, -1).mean(1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = build_open_clip_model(resolve_arch(cfg["arch"]).model_cfg)
    visual = clip.visual
    del clip
    visual.requires_grad_(True)
    return FineTuned(visual, info.embed_dim, cfg["classes"]).to(device).train()


def make_adapter_model(cfg: dict, backbone, device):
    """ST-Adapter (Pan et al. 2022) style: before every block of the frozen tower, patch tokens get
    ``x + up(DWConv_{3x1x1}(down(x)))`` (bottleneck ``ratio · W``, depthwise temporal conv over the token grid,
    no activation, class token untouched, as the reference ST-Adapter). The tower is frozen, but the gradient of
    every adapter below the top flows through it, so its activations are saved. Frame-averaged embeddings → linear."""
    torch, nn = _nn()
    from side4video.modules.functional import temporal_depthwise

    info = backbone.info
    visual = backbone.model.visual
    if hasattr(visual, "trunk"):
        blocks, batch_first = list(visual.trunk.blocks), True
    else:
        blocks, batch_first = list(visual.transformer.resblocks), getattr(visual.transformer, "batch_first", True)
    width = info.width
    hidden = max(8, round(width * cfg["adapter_ratio"]))

    class STAdapter(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Linear(width, hidden)
            self.conv_weight = nn.Parameter(torch.randn(hidden, 3) * 3 ** -0.5)
            self.conv_bias = nn.Parameter(torch.zeros(hidden))
            self.up = nn.Linear(hidden, width)
            nn.init.normal_(self.up.weight, std=0.02 / math.sqrt(len(blocks)))
            nn.init.zeros_(self.up.bias)

        def forward(self, x, num_frames):
            if not batch_first:
                x = x.transpose(0, 1)
            cls, patches = x[:, :1], x[:, 1:]
            h = temporal_depthwise(self.down(patches), self.conv_weight, self.conv_bias, num_frames)
            out = torch.cat([cls, patches + self.up(h).to(patches.dtype)], dim=1)
            return out if batch_first else out.transpose(0, 1)

    class AdapterModel(nn.Module):
        backbone_layers: list[int] = []
        needs_embedding = False

        def __init__(self):
            super().__init__()
            self.adapters = nn.ModuleList(STAdapter() for _ in blocks)
            self.fc = nn.Linear(info.embed_dim, cfg["classes"])
            self._frames = None   # set only while this model runs: the frozen encoder's own forward stays plain
            self._handles = []
            for block, adapter in zip(blocks, self.adapters):
                def hook(module, args, adapter=adapter):
                    if self._frames is None:
                        return None
                    return (adapter(args[0], self._frames), *args[1:])
                self._handles.append(block.register_forward_pre_hook(hook))

        def forward(self, frames):
            b, t = frames.shape[:2]
            self._frames = t
            try:   # grad enabled: backprop through the frozen tower
                embedding = visual(frames.flatten(0, 1).to(backbone.dtype))
            finally:
                self._frames = None
            return self.fc(embedding.reshape(b, t, -1).mean(1).to(self.fc.weight.dtype))

        def remove(self):
            for handle in self._handles:
                handle.remove()

    return AdapterModel().to(device).train()


def method_label(name: str, cfg: dict) -> str:
    return METHODS[name][0].format(**cfg)


class Method:
    """One method's model, optimizer and training step, built in the current process."""

    def __init__(self, name: str, cfg: dict, precision: str, device, backbone=None):
        import torch
        from side4video.engine.optim import build_optimizer
        from side4video.models import count_parameters, create_model
        self.name, self.cfg, self.precision, self.device = name, cfg, precision, device
        self.spec = METHODS[name][1]
        kind = self.spec["kind"]
        self.backbone = backbone if backbone is not None else build_frozen_backbone(cfg, precision, device)
        info = self.backbone.info
        torch.manual_seed(0)
        self.model = None
        self.uses_backbone = kind != "full_ft"
        if kind == "side":
            self.model = create_model("side4video", info, cfg["classes"], side_dim=cfg[self.spec["dim"]],
                                      grad_checkpointing=self.spec["grad_checkpointing"],
                                      recompute=self.spec["recompute"]).to(device).train()
            if self.spec.get("compile"):
                self.model.compile()     # as the trainer does for network.compile: the first steps compile
        elif kind == "probe":
            self.model = create_model("frame_avg", info, cfg["classes"]).to(device).train()
        elif kind == "full_ft":
            self.model = make_fine_tuned(cfg, info, device)
        elif kind == "adapter":
            self.model = make_adapter_model(cfg, self.backbone, device)
        self.kind = kind
        self.plugins, trained = self._plugins(cfg, precision, device)
        self.trainable = count_parameters(trained) if trained is not None else 0
        self.optimizer = build_optimizer(trained, solver_namespace(cfg)) if trained is not None else None
        self.exclude = storage_pointers(self.backbone.model, trained,
                                        *(getattr(p, "ema", None) for p in self.plugins))
        names = {}
        for root, module in (("backbone", self.backbone.model), ("model", self.model)):
            if module is not None:
                for sub_name, sub in module.named_modules():
                    names.setdefault(id(sub), f"{root}.{sub_name}" if sub_name else root)
        self.module_names = names

    def _plugins(self, cfg: dict, precision: str, device):
        """The spec's training plugins, set up as the trainer does; returns them and the module the optimizer
        trains (the model plus the plugins' trainable parts)."""
        if not self.spec.get("plugins"):
            return [], self.model
        from side4video.engine.plugins import PluginContext, build_plugins, set_up_plugins
        from side4video.models import TapAssembler
        solver = SimpleNamespace(smoothing=0.0, precision=precision, mixup=0.0, cutmix=0.0,
                                 plugins=[{"type": name} for name in self.spec["plugins"]])
        run_cfg = SimpleNamespace(solver=solver)
        context = PluginContext(cfg=run_cfg, model=self.model, backbone=self.backbone, assembler=TapAssembler(),
                                num_classes=cfg["classes"], device=device)
        plugins = build_plugins(run_cfg)
        return plugins, set_up_plugins(plugins, context)[0]

    # -- the pieces of a step ---------------------------------------------------------------------------------
    def autocast(self):
        import torch
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self):
        import torch
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def floor(self, frames):
        """The frozen backbone's inference forward (no grad, its own precision)."""
        self.backbone.encode_image(frames)
        self.sync()

    def forward_loss(self, frames, labels, phases: dict | None = None):
        """Frozen tap (if any) and the model's forward under autocast → the loss (fp32)."""
        from side4video.engine.plugins import classification_loss
        from side4video.models import model_inputs
        from side4video.engine.plugins import TrainBatch
        t0 = time.perf_counter()
        batch = TrainBatch(frames=frames, labels=labels, targets=labels)
        for plugin in self.plugins:                                     # as the trainer: before the backbone
            batch = plugin.on_batch(batch)
        if self.kind in ("side", "probe"):
            inputs = model_inputs(self.backbone, self.model, batch.frames)   # = run_model's tap
            self.sync()
        else:
            inputs = batch.frames
        t1 = time.perf_counter()
        with self.autocast():                                           # DeepSpeed's torch_autocast
            logits = self.model(inputs)
            loss = classification_loss(logits, batch.targets)
            for plugin in self.plugins:
                for term in plugin.loss(logits, inputs, batch, self.model).values():
                    loss = loss + term
        self.sync()
        if phases is not None:
            phases["tap"] = t1 - t0
            phases["forward"] = time.perf_counter() - t1
        return loss

    def step(self, frames, labels, meter: RecordingMeter | None = None) -> dict[str, float]:
        """One training step; returns its phase times."""
        phases: dict[str, float] = {}
        if self.kind == "floor":
            t0 = time.perf_counter()
            if meter is not None:
                with meter.hooks():
                    self.floor(frames)
            else:
                self.floor(frames)
            phases["tap"] = time.perf_counter() - t0
            phases["total"] = phases["tap"]
            return phases
        start = time.perf_counter()
        if meter is not None:
            stack: list[str] = meter.module_stack if meter.module_stack is not None else []
            with module_tracking(self.module_names, stack) if meter.record else contextlib.nullcontext():
                with meter.hooks():
                    loss = self.forward_loss(frames, labels, phases)
        else:
            loss = self.forward_loss(frames, labels, phases)
        t2 = time.perf_counter()
        loss.backward()
        self.sync()
        t3 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for plugin in self.plugins:
            plugin.after_step(1, self.model)
        self.sync()
        t4 = time.perf_counter()
        phases.update(backward=t3 - t2, optimizer=t4 - t3, total=t4 - start)
        return phases

    def saved_bytes_only(self, frames, labels, inputs=None) -> int:
        """Saved bytes of one forward (no backward): the scaling rows."""
        from side4video.engine.plugins import classification_loss
        meter = SavedTensorMeter(self.exclude)
        with meter.hooks():
            if self.kind == "floor":
                self.floor(frames)
            else:
                from side4video.models import model_inputs
                if inputs is None and self.kind in ("side", "probe"):
                    inputs = model_inputs(self.backbone, self.model, frames)
                elif inputs is None:
                    inputs = frames
                with self.autocast():
                    logits = self.model(inputs)
                loss = classification_loss(logits, labels)
                del loss, logits
        return meter.bytes

    def backbone_only_bytes(self) -> int:
        """Weights of the frozen backbone when the method itself does not need it (only the floor timing does)."""
        if self.uses_backbone:
            return 0
        return sum(t.numel() * t.element_size() for t in [*self.backbone.model.parameters(),
                                                            *self.backbone.model.buffers()])


def _device(cfg: dict):
    import torch
    if cfg["device"] == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg["device"])


def _inputs(cfg: dict, batch: int, frames: int, info, device, seed: int = 0):
    import torch
    size = info.image_size
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch, frames, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, cfg["classes"], (batch,), generator=generator).to(device)
    return clips, labels


def _check_size(cfg: dict, info) -> None:
    if cfg.get("size") and int(cfg["size"]) != info.image_size:
        raise SystemExit(f"--size {cfg['size']}: backbone {info.arch} takes {info.image_size} px images "
                         f"(its position embedding is {info.grid_size} x {info.grid_size} patches)")


# ------------------------------------------------------------------------------------------------------------------
# worker tasks (each runs in a fresh process with --isolate)
# ------------------------------------------------------------------------------------------------------------------
def task_method(cfg: dict, name: str, precision: str, runtime_rss: int) -> dict[str, Any]:
    import torch
    device = _device(cfg)
    method = Method(name, cfg, precision, device)
    info = method.backbone.info
    _check_size(cfg, info)
    # the probe's BatchNorm over clips needs two of them in training mode
    batch = max(cfg["batch"], 2) if method.kind == "probe" else cfg["batch"]
    frames, labels = _inputs(cfg, batch, cfg["frames"], info, device)
    host = HostPeak()
    # The peak covers every step from here on (the first without, the later ones with AdamW state), not the
    # construction (open_clip builds the text tower before it is dropped). Memory freed by an earlier step and
    # kept by the allocator is reused, so a resident-set peak over all steps is not inflated by it.
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        built = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        built = host.current()
        host.reset()
    # warm-up; the first step is the measured one for saved bytes (the graph is the same every step)
    meter = RecordingMeter(method.exclude, module_stack=[], record=cfg["breakdown"] > 0)
    method.step(frames, labels, meter)
    for _ in range(max(cfg["warmup"], 1) - 1):
        method.step(frames, labels)
    steps, floors, ratios, phase_rows = [], [], [], []
    for i in range(cfg["steps"]):
        order = [0, 1] if i % 2 == 0 else [1, 0]
        t_step = t_floor = 0.0
        for which in order:
            if which == 0:
                t0 = time.perf_counter()
                method.floor(frames)
                t_floor = time.perf_counter() - t0
            else:
                phases = method.step(frames, labels)
                t_step = phases["total"]
                phase_rows.append(phases)
        steps.append(t_step)
        floors.append(t_floor)
        ratios.append(t_step / t_floor)
    if device.type == "cuda":
        peak_abs = torch.cuda.max_memory_allocated()
        peak = peak_abs - method.backbone_only_bytes()
        peak_method = "torch.cuda.max_memory_allocated"
    else:
        peak_abs = host.peak()
        peak = peak_abs - runtime_rss - method.backbone_only_bytes()
        peak_method = host.method
    phases = {key: statistics.median(row[key] for row in phase_rows) for key in phase_rows[0]}
    result = {
        "method": name, "label": method_label(name, cfg), "precision": precision, "batch": batch,
        "frames": cfg["frames"], "trainable": method.trainable, "param_grad_adam": method.trainable * 16,
        "saved": meter.bytes, "saved_storages": len(meter.storages),
        "saved_params_excluded": sum(meter.excluded.values()),
        "peak": peak, "peak_abs": peak_abs, "after_build": built - (0 if device.type == "cuda" else runtime_rss),
        "runtime_rss": runtime_rss, "peak_method": peak_method,
        "step_s": statistics.median(steps), "steps_s": steps, "floor_s": statistics.median(floors),
        "floors_s": floors, "time_vs_floor": statistics.median(ratios), "ratios": ratios, "phases": phases,
    }
    if cfg["breakdown"] > 0:
        result["breakdown"] = group_records(list(meter.records.values()), cfg["breakdown"])
    if cfg.get("profile", 0) > 0 and method.kind != "floor":
        result["profile"] = profile_step(method, frames, labels, cfg["profile"])
    if method.kind == "adapter":
        method.model.remove()
    return result


def profile_step(method: Method, frames, labels, top: int) -> list[dict[str, Any]]:
    """One more step under ``torch.profiler``: the ops with the largest self time (after the timed steps)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if method.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        method.step(frames, labels)
    device = method.device.type == "cuda"
    rows = []
    for event in prof.key_averages():
        self_us = event.self_device_time_total if device else event.self_cpu_time_total
        rows.append({"op": event.key, "count": event.count, "self_s": self_us / 1e6})
    total = sum(r["self_s"] for r in rows)
    rows.sort(key=lambda r: -r["self_s"])
    for r in rows:
        r["share"] = r["self_s"] / total if total else 0.0
    return rows[:top]


def task_scaling(cfg: dict, precision: str, names: list[str]) -> list[dict[str, Any]]:
    """Exact saved bytes of one forward for each frames / batch setting (no backward, no timing)."""
    from side4video.models import model_inputs
    device = _device(cfg)
    backbone = build_frozen_backbone(cfg, precision, device)
    _check_size(cfg, backbone.info)
    shapes = sorted({(1, t) for t in cfg["scale_frames"]} | {(b, cfg["frames"]) for b in cfg["scale_batch"]})
    methods = [Method(name, cfg, precision, device, backbone=backbone) for name in names]
    rows = []
    for batch, frames_n in shapes:
        frames, labels = _inputs(cfg, batch, frames_n, backbone.info, device)
        shared = {}
        for method in methods:
            inputs = None
            if method.kind in ("side", "probe"):
                key = (tuple(method.model.backbone_layers), bool(method.model.needs_embedding))
                if key not in shared:
                    shared[key] = model_inputs(backbone, method.model, frames)
                inputs = shared[key]
            saved = method.saved_bytes_only(frames, labels, inputs)
            rows.append({"method": method.name, "precision": precision, "batch": batch, "frames": frames_n,
                         "saved": saved})
            _progress(f"[{precision}] scaling {method.name} batch {batch} x {frames_n} frames: "
                      f"{saved / MIB:.1f} MiB saved")
        del shared
        gc.collect()
    return rows


def task_multiview(cfg: dict, precision: str, chunk: int, runtime_rss: int) -> dict[str, Any]:
    """3 crops x 10 clips of one video through ``forward_views`` (the evaluation path), at most ``chunk`` views per
    forward: peak memory and time."""
    import torch
    from side4video.engine.evaluator import autocast_context, forward_views
    from side4video.models import create_model
    device = _device(cfg)
    backbone = build_frozen_backbone(cfg, precision, device)
    info = backbone.info
    torch.manual_seed(0)
    model = create_model("side4video", info, cfg["classes"], side_dim=cfg["side_dim"]).to(device).eval()
    views = cfg["crops"] * cfg["clips"]
    size = info.image_size
    frames = torch.randn(1, views, cfg["frames"], 3, size, size).to(device)
    host = HostPeak()
    with autocast_context(device, precision):   # warm-up on one view
        forward_views(backbone, model, frames[:, :1], max_views_per_forward=chunk)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        host.reset()
    t0 = time.perf_counter()
    with autocast_context(device, precision):
        logits = forward_views(backbone, model, frames, max_views_per_forward=chunk)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak_abs = torch.cuda.max_memory_allocated()
        peak = peak_abs
    else:
        peak_abs = host.peak()
        peak = peak_abs - runtime_rss
    assert logits.shape == (1, views, cfg["classes"])
    return {"precision": precision, "views": views, "crops": cfg["crops"], "clips": cfg["clips"], "chunk": chunk,
            "frames": cfg["frames"], "peak": peak, "peak_abs": peak_abs, "seconds": seconds,
            "views_per_s": views / seconds}


def run_task(spec: dict) -> Any:
    """Entry point of a worker: ``spec = {"task": ..., "cfg": ..., ...}``."""
    import torch
    _quiet()
    runtime_rss = spec.get("runtime_rss") or HostPeak.current()
    cfg = spec["cfg"]
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    if spec["task"] == "method":
        return task_method(cfg, spec["method"], spec["precision"], runtime_rss)
    if spec["task"] == "scaling":
        return task_scaling(cfg, spec["precision"], spec["methods"])
    if spec["task"] == "multiview":
        return task_multiview(cfg, spec["precision"], spec["chunk"], runtime_rss)
    raise ValueError(spec["task"])


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Runner:
    """Runs worker tasks in a fresh process each (``isolate``) or in this process.

    Fresh processes are forked from this one on CPU (it has imported everything but run no tensor op, so no
    OpenMP pool exists yet and the imports are not paid again); on CUDA they are spawned (CUDA does not survive a
    fork).
    """

    def __init__(self, isolate: bool, device_type: str, threads: int | None):
        self.isolate = isolate
        self.fork = isolate and device_type == "cpu" and hasattr(os, "fork")
        self.threads = threads
        self.runtime_rss = None

    def __call__(self, spec: dict) -> Any:
        if not self.isolate:
            if self.runtime_rss is None:
                self.runtime_rss = HostPeak.current()
            gc.collect()
            return run_task(dict(spec, runtime_rss=self.runtime_rss))
        with tempfile.TemporaryDirectory() as tmp:
            result_path = Path(tmp) / "result.json"
            if self.fork:
                return self._forked(spec, result_path)
            spec_path = Path(tmp) / "spec.json"
            spec_path.write_text(json.dumps(spec))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            env.setdefault("DS_ACCELERATOR", "cpu")
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", str(spec_path),
                                   "--_result", str(result_path)], env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"worker for {spec['task']} {spec.get('method', '')} failed "
                                   f"(exit {proc.returncode})")
            return json.loads(result_path.read_text())

    def _forked(self, spec: dict, result_path: Path) -> Any:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:   # the child: measure, write, leave without running the parent's cleanup
            code = 1
            try:
                result = run_task(dict(spec, runtime_rss=HostPeak.current()))
                result_path.write_text(json.dumps(result))
                code = 0
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise RuntimeError(f"worker for {spec['task']} {spec.get('method', '')} failed (exit {code})")
        return json.loads(result_path.read_text())


def worker_main(spec_path: str, result_path: str) -> None:
    # the runtime's resident set is measured after the imports, before any tensor exists
    import torch  # noqa: F401
    import side4video.engine.evaluator  # noqa: F401
    import side4video.engine.optim  # noqa: F401
    import side4video.engine.plugins  # noqa: F401
    import side4video.models  # noqa: F401
    import open_clip  # noqa: F401
    runtime_rss = HostPeak.current()
    spec = json.loads(Path(spec_path).read_text())
    spec["runtime_rss"] = runtime_rss
    result = run_task(spec)
    Path(result_path).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------------------------
# reporting
# ------------------------------------------------------------------------------------------------------------------
def environment(cfg: dict, argv: list[str]) -> dict[str, Any]:
    import importlib.metadata as md
    import torch
    versions = {}
    for dist in ("torch", "open_clip_torch", "timm", "deepspeed"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    device = _device(cfg)
    if device.type == "cuda":
        machine = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        cpu = platform.processor() or ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        machine = f"CPU {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"machine": machine, "device": device.type, "versions": versions,
            "command": "python benchmarks/train_memory_speed.py " + " ".join(shlex.quote(a) for a in argv),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "loadavg_start": load, "python": platform.python_version()}


def _mib(value: float) -> str:
    value = value / MIB
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 1 else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x" if value >= 0.01 or value == 0 else f"{value:.3f}x"


def derive(results: dict[str, Any]) -> None:
    """Ratios to full fine-tuning and per-clip numbers, in place."""
    for precision, rows in results["methods"].items():
        ft = rows.get("full_ft")
        for row in rows.values():
            row["saved_per_clip"] = row["saved"] / row["batch"]
            row["saved_per_clip_mib"] = row["saved_per_clip"] / MIB
            row["saved_vs_ft"] = (row["saved_per_clip"] / (ft["saved"] / ft["batch"])
                                  if ft and ft["saved"] else None)
            row["peak_vs_ft"] = (row["peak"] / ft["peak"] if ft and ft["peak"] > 0 and ft["batch"] == row["batch"]
                                 else None)
            row["clips_per_s"] = row["batch"] / row["step_s"] if row["step_s"] > 0 else None
    scaling = results.get("scaling", [])
    slopes = []
    by_key = defaultdict(dict)
    for row in scaling:
        by_key[(row["precision"], row["method"])][(row["batch"], row["frames"])] = row["saved"]
    cfg = results["config"]
    for (precision, name), table in by_key.items():
        entry = {"precision": precision, "method": name}
        for axis, points in (("clip", sorted((b, s) for (b, t), s in table.items() if t == cfg["frames"])),
                             ("frame", sorted((t, s) for (b, t), s in table.items() if b == 1))):
            if len(points) < 2:
                continue
            (x0, y0), (x1, y1) = points[0], points[-1]
            slope = (y1 - y0) / (x1 - x0)
            deviation = max(abs(y - (y0 + slope * (x - x0))) / y for x, y in points) if all(y for _, y in points) else 0.0
            entry[f"per_{axis}"] = slope
            entry[f"{axis}_points"] = points
            entry[f"{axis}_intercept"] = y0 - slope * x0
            entry[f"{axis}_nonlinearity"] = deviation
        slopes.append(entry)
    results["slopes"] = slopes
    goals = []
    for what, precision, name, quantity, bound in GOALS:
        row = results["methods"].get(precision, {}).get(name)
        value = row.get(quantity) if row else None
        goals.append({"goal": what.format(**cfg), "precision": precision, "method": name, "quantity": quantity, "bound": bound,
                      "value": value, "met": None if value is None else bool(value <= bound)})
    results["goals"] = goals


def to_markdown(results: dict[str, Any]) -> str:
    env, cfg = results["environment"], results["config"]
    v = env["versions"]
    lines = ["# Training memory and speed per step (`benchmarks/train_memory_speed.py`)", "",
             f"- command: `{env['command']}`", f"- date: {env['date']}",
             *[f"- resumed (the rows it lacked, measured the same way): `{r['command']}` at {r['date']}"
               for r in env.get("resumed", [])],
             f"- machine: {env['machine']}"
             + (f" (load average at start {env['loadavg_start'][0]:.1f})" if env.get("loadavg_start") else ""),
             f"- versions: torch {v['torch']}, open_clip {v['open_clip_torch']}, timm {v['timm']}, "
             f"deepspeed {v['deepspeed']} (the step mirrors the trainer's; DeepSpeed itself is not in the loop), "
             f"Python {env['python']}",
             f"- backbone {cfg['arch_label']} (random weights), {cfg['frames']} frames x {cfg['size_used']} px, "
             f"batch {cfg['batch']}, {cfg['classes']} classes, AdamW (foreach/fused as `build_optimizer`); "
             f"{cfg['warmup']} warm-up + {cfg['steps']} timed steps, each paired with one frozen forward",
             f"- saved for backward: exact (distinct storages seen by `saved_tensors_hooks`, parameters excluded). "
             f"Peak memory: {results.get('peak_method', '')}"
             + (" minus the runtime's resident set after the imports, one fresh process per method, over all "
                "steps after the models are built" if env["device"] == "cpu" and cfg["isolate"] else "")
             + (" (in-process: approximate)" if not cfg["isolate"] else "")
             + "; it includes the frozen backbone's weights, trainable weights, gradients, AdamW state, activations"
             + (", allocator slack and the code pages the first kernels fault in (the floor row shows that constant "
                "plus the frozen weights)" if env["device"] == "cpu" else "")
             + " (full fine-tuning: without the frozen backbone it does not use).",
             "- time: per timed step, the training step and one frozen forward (the floor) back to back in the same "
             "process, alternating the order; 'vs floor' is the median of the per-pair ratios.", ""]
    if env["device"] == "cpu":
        lines += ["CPU times: bf16 on this CPU runs through oneDNN (AMX if present); they say nothing about a GPU.", ""]
    for precision, rows in results["methods"].items():
        lines += [f"## {precision}", "",
                  "| method | trainable params | saved for backward | per clip | vs full FT (per clip) | peak memory | vs full FT "
                  "| step s | clips/s | vs floor (paired) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in rows.values():
            label = row["label"] + (f" (batch {row['batch']})" if row["batch"] != cfg["batch"] else "")
            lines.append(
                f"| {label} | {row['trainable'] / 1e6:.2f} M | {_mib(row['saved'])} MiB | "
                f"{_mib(row['saved_per_clip'])} MiB | {_ratio(row['saved_vs_ft'])} | {_mib(row['peak'])} MiB | "
                f"{_ratio(row['peak_vs_ft'])} | {row['step_s']:.2f} | "
                f"{row['clips_per_s']:.2f} | {row['time_vs_floor']:.2f}x |")
        lines += ["", "Phases (median s): frozen tap / model forward / backward / optimizer; the paired ratios; and "
                  "1 + (step − tap) / floor, the ratio with the tap's own timing noise taken out (tap = floor's work).",
                  "", "| method | tap | forward | backward | optimizer | step | floor | paired ratios | 1 + (step − tap) / floor |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in rows.values():
            p = row["phases"]
            beyond = 1 + (p["total"] - p.get("tap", 0)) / row["floor_s"] if row["floor_s"] > 0 else 0.0
            lines.append(f"| {row['method']} | {p.get('tap', 0):.2f} | {p.get('forward', 0):.2f} | "
                         f"{p.get('backward', 0):.2f} | {p.get('optimizer', 0):.3f} | {p['total']:.2f} | "
                         f"{row['floor_s']:.2f} | {', '.join(f'{r:.2f}' for r in row['ratios'])} | "
                         f"{beyond:.2f}x |" if row["method"] not in ("full_ft", "adapter", "floor") else
                         f"| {row['method']} | {p.get('tap', 0):.2f} | {p.get('forward', 0):.2f} | "
                         f"{p.get('backward', 0):.2f} | {p.get('optimizer', 0):.3f} | {p['total']:.2f} | "
                         f"{row['floor_s']:.2f} | {', '.join(f'{r:.2f}' for r in row['ratios'])} | – |")
        lines.append("")
        profiled = [row for row in rows.values() if row.get("profile")]
        for row in profiled:
            lines += [f"Largest self times, {row['label']}, {precision} (one profiled step, torch.profiler):", "",
                      "| op | calls | self s | share |", "|---|---|---|---|"]
            for e in row["profile"]:
                lines.append(f"| `{e['op']}` | {e['count']} | {e['self_s']:.3f} | {e['share'] * 100:.1f}% |")
            lines.append("")
    if results.get("slopes"):
        lines += ["## Scaling (exact saved bytes of one forward, batch 1 for frames, "
                  f"{cfg['frames']} frames for batch)", "",
                  "| precision | method | saved by frames (batch 1) | per frame | saved by batch | per clip | "
                  "batch-independent | max deviation from linear |", "|---|---|---|---|---|---|---|---|"]
        ft = {s["precision"]: s for s in results["slopes"] if s["method"] == "full_ft"}
        for s in results["slopes"]:
            frames_txt = ", ".join(f"{t}: {_mib(y)}" for t, y in s.get("frame_points", []))
            batch_txt = ", ".join(f"{b}: {_mib(y)}" for b, y in s.get("clip_points", []))
            ref = ft.get(s["precision"])
            rel_clip = f" ({s['per_clip'] / ref['per_clip']:.2f}x FT)" if ref and "per_clip" in s and ref is not s else ""
            rel_frame = (f" ({s['per_frame'] / ref['per_frame']:.2f}x FT)" if ref and "per_frame" in s and ref is not s
                         else "")
            dev = max(s.get("clip_nonlinearity", 0), s.get("frame_nonlinearity", 0))
            lines.append(f"| {s['precision']} | {s['method']} | {frames_txt} MiB | {_mib(s.get('per_frame', 0))} MiB"
                         f"{rel_frame} | {batch_txt} MiB | {_mib(s.get('per_clip', 0))} MiB{rel_clip} | "
                         f"{_mib(s.get('clip_intercept', 0))} MiB | {dev * 100:.3f}% |")
        lines.append("")
    if results.get("multiview"):
        lines += [f"## Multi-view test path (`forward_views`, one video, Side4Video D={cfg['side_dim']})", "",
                  "| precision | views | views per forward | peak memory | vs training step peak (same precision, "
                  f"batch {cfg['batch']}) | s per video | views/s |", "|---|---|---|---|---|---|---|"]
        for mv in results["multiview"]:
            train = results["methods"].get(mv["precision"], {}).get("side")
            rel = _ratio(mv["peak"] / train["peak"]) if train and train["peak"] > 0 else "–"
            lines.append(f"| {mv['precision']} | {mv['crops']} crops x {mv['clips']} clips = {mv['views']} | "
                         f"{mv['chunk']} | {_mib(mv['peak'])} MiB | {rel} | {mv['seconds']:.1f} | "
                         f"{mv['views_per_s']:.2f} |")
        lines.append("")
    if results.get("goals"):
        lines += ["## Goals (issue \"Performance\")", "",
                  "| goal | bound | measured | met | note |", "|---|---|---|---|---|"]
        for g in results["goals"]:
            value = "not measured" if g["value"] is None else (
                f"{g['value']:.1f} MiB" if g["quantity"].endswith("mib") else f"{g['value']:.3f}x")
            met = "–" if g["met"] is None else ("yes" if g["met"] else "**no**")
            bound = f"{g['bound']:.0f} MiB" if g["quantity"].endswith("mib") else f"{g['bound']:.2f}x"
            note = ""
            row = results["methods"].get(g["precision"], {}).get(g["method"])
            if row and g["quantity"] == "time_vs_floor":
                beyond = 1 + (row["phases"]["total"] - row["phases"].get("tap", 0)) / row["floor_s"]
                note = (f"pairs {', '.join(f'{r:.2f}' for r in row['ratios'])}; "
                        f"1 + (step − tap) / floor = {beyond:.2f}x")
            elif row and g["quantity"] == "saved_vs_ft":
                ft = results["methods"][g["precision"]].get("full_ft")
                if ft:
                    note = (f"{_mib(row['saved_per_clip'])} of {_mib(ft['saved'] / ft['batch'])} MiB per clip; "
                            f"bound = {_mib(g['bound'] * ft['saved'] / ft['batch'])} MiB")
            lines.append(f"| {g['goal']} | ≤ {bound} | {value} | {met} | {note} |")
        if env["device"] == "cpu":
            lines.append("")
            lines.append("Time ratios are CPU-only (2 cores here); on a GPU the frozen forward and the side network "
                         "have a different balance.")
        lines.append("")
    breakdowns = [(p, r) for p, rows in results["methods"].items() for r in rows.values()
                  if r.get("breakdown") and r["method"] in results["config"]["breakdown_methods"]]
    if breakdowns:
        lines += ["## Where the saved bytes go (largest groups of saved storages, summed over blocks)", "",
                  "Each storage counts once, whole; its shape is that of the first tensor seen on it (a tap's class "
                  "and patch tokens are views of one `[B·T, 1+N, W]` block output, so a `…x1x768` class-token row "
                  "keeps the whole tap alive). 'created by' is the tensor's `grad_fn` (or how it came to be), "
                  "'saved at' the innermost source lines outside torch.", ""]
        for precision, row in breakdowns:
            lines += [f"### {row['label']}, {precision}: {_mib(row['saved'])} MiB in {row['saved_storages']} storages",
                      "", "| MiB | count | module | created by | shape | dtype | saved at |", "|---|---|---|---|---|---|---|"]
            for e in row["breakdown"]:
                lines.append(f"| {_mib(e['bytes'])} | {e['count']} | `{e['module']}` | {e['op']} | "
                             f"{'x'.join(map(str, e['shape']))} | {e['dtype']} | `{e['site']}` |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-16", help="backbone (random weights); --smoke: tiny_clip.json")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="image size (must be the backbone's; checked)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=174)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--methods", nargs="+", default=["all"],
                        help=f"any of {', '.join(METHODS)} (comma or space separated), or 'all'")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps (the first is the saved-bytes one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--side-dim", type=int, default=320, help="D of the side rows (--smoke: 64)")
    parser.add_argument("--light-dim", type=int, default=128, help="D of the light rows (--smoke: 32)")
    parser.add_argument("--adapter-ratio", type=float, default=0.25, help="adapter bottleneck width / W")
    parser.add_argument("--scaling-methods", nargs="+", default=DEFAULT_SCALING)
    parser.add_argument("--scale-frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--scale-batch", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--scaling-precision", nargs="+", default=None,
                        help="precisions of the scaling rows (default: all of --precision)")
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--crops", type=int, default=3)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--eval-chunks", type=int, nargs="+", default=[10],
                        help="max views per forward of the multi-view rows (test.py's default is 64)")
    parser.add_argument("--multiview-precision", nargs="+", default=None, help="default: the first --precision")
    parser.add_argument("--no-multiview", action="store_true")
    parser.add_argument("--breakdown", type=int, default=12, help="largest saved-tensor groups to list (0: off)")
    parser.add_argument("--breakdown-methods", nargs="+", default=["side", "side-ckpt", "light"])
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile one more step per method and list its N ops with the largest self time")
    parser.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                        help="one fresh subprocess per method (default, except --smoke)")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false")
    parser.add_argument("--smoke", action="store_true", help="tiny backbone, 1 step, every method: seconds")
    parser.add_argument("--json", default=None, help="write the results as JSON here (updated after every task)")
    parser.add_argument("--output", default=None, help=f"Markdown file (default {DEFAULT_OUTPUT.relative_to(REPO)}; "
                        "--smoke or '-': printed only)")
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="only re-render the Markdown of an earlier --json file (to --output, else stdout)")
    parser.add_argument("--resume", default=None, metavar="JSON",
                        help="continue the interrupted run whose --json this is (same settings): measure only what "
                             "it lacks")
    parser.add_argument("--redo", nargs="+", default=[], help="with --resume: measure these again "
                        "(METHOD, PRECISION:METHOD, 'scaling', 'multiview')")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    methods = [m for item in args.methods for m in item.split(",") if m]
    args.methods = [m for m in METHODS if m not in OPT_IN] if "all" in methods else methods
    unknown = [m for m in args.methods + args.scaling_methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if args.smoke:
        args.arch = str(TINY_CLIP)
        args.steps, args.warmup = 1, 1
        args.batch = 2 if args.batch == parser.get_default("batch") else args.batch
        args.scale_frames = [4, 8]
        args.side_dim = 64 if args.side_dim == parser.get_default("side_dim") else args.side_dim
        args.light_dim = 32 if args.light_dim == parser.get_default("light_dim") else args.light_dim
        args.scale_batch = [1, 2, 4]
        args.frames = 4 if args.frames == parser.get_default("frames") else args.frames
        args.clips = 2 if args.clips == parser.get_default("clips") else args.clips
        args.eval_chunks = [4] if args.eval_chunks == parser.get_default("eval_chunks") else args.eval_chunks
        if args.isolate is None:
            args.isolate = False
        if args.threads is None:
            args.threads = 1   # tiny ops: a second thread only adds synchronisation (and stalls on a busy machine)
    if args.isolate is None:
        args.isolate = True
    if "full_ft" not in args.methods:
        warnings.warn("without full_ft there are no ratios to full fine-tuning")
    if "floor" in args.methods:   # the floor last: its row restates the paired floor
        args.methods = [m for m in args.methods if m != "floor"] + ["floor"]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._worker:
        worker_main(args._worker, args._result)
        return {}
    if args.render:
        results = json.loads(Path(args.render).read_text())
        derive(results)
        text = to_markdown(results)
        if args.output and args.output != "-":
            Path(args.output).write_text(text)
        else:
            print(text)
        return results
    import torch
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, argv)
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from side4video.backbones import describe_backbone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = describe_backbone(args.arch)
    if args.size and args.size != info.image_size:
        raise SystemExit(f"--size {args.size}: backbone {info.arch} takes {info.image_size} px images")
    cfg = {"arch": args.arch, "arch_label": "tiny_clip.json" if args.smoke else info.arch, "frames": args.frames,
           "size": args.size, "size_used": info.image_size, "batch": args.batch, "classes": args.classes,
           "steps": args.steps, "warmup": args.warmup, "device": args.device, "threads": args.threads,
           "adapter_ratio": args.adapter_ratio, "side_dim": args.side_dim, "light_dim": args.light_dim,
           "scale_frames": args.scale_frames, "scale_batch": args.scale_batch,
           "crops": args.crops, "clips": args.clips, "breakdown": args.breakdown,
           "breakdown_methods": args.breakdown_methods, "isolate": args.isolate, "smoke": args.smoke,
           "profile": args.profile}
    results: dict[str, Any] = {"config": cfg, "environment": environment(cfg, argv), "methods": {}, "scaling": [],
                               "multiview": []}
    redo = {item for entry in args.redo for item in entry.split(",") if item}
    if args.resume:
        # continue an interrupted run: keep what it measured (same settings), measure the rest (and --redo)
        earlier = json.loads(Path(args.resume).read_text())
        differing = {k for k in cfg if k not in ("isolate", "profile") and earlier["config"].get(k) != cfg[k]}
        if differing:
            raise SystemExit(f"--resume {args.resume}: settings differ ({', '.join(sorted(differing))})")
        resumed = earlier["environment"].setdefault("resumed", [])
        resumed.append({k: results["environment"][k] for k in ("command", "date", "loadavg_start")})
        results["environment"] = earlier["environment"]
        results["methods"] = {p: {n: r for n, r in rows.items() if n not in redo and f"{p}:{n}" not in redo}
                              for p, rows in earlier["methods"].items()}
        results["scaling"] = [r for r in earlier.get("scaling", []) if "scaling" not in redo]
        results["multiview"] = [r for r in earlier.get("multiview", []) if "multiview" not in redo]
        results["peak_method"] = earlier.get("peak_method")
    import side4video.engine.evaluator  # noqa: F401  (imported once, before any worker forks)
    import side4video.engine.optim  # noqa: F401
    import side4video.engine.plugins  # noqa: F401
    import side4video.models  # noqa: F401
    runner = Runner(args.isolate, results["environment"]["device"], args.threads)
    gc.collect()
    gc.freeze()   # what exists now is never garbage: later collections only walk the benchmark's own objects
    output = (None if args.output == "-" else Path(args.output) if args.output
              else None if args.smoke else DEFAULT_OUTPUT)

    def save():
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=1))

    started = time.perf_counter()
    for precision in args.precision:
        rows = results["methods"].setdefault(precision, {})
        for name in args.methods:
            if name in rows:
                continue
            row = runner({"task": "method", "cfg": cfg, "method": name, "precision": precision})
            rows[name] = row
            results["peak_method"] = row["peak_method"]
            _progress(f"[{precision}] {name}: saved {row['saved'] / MIB:.1f} MiB, peak {row['peak'] / MIB:.0f} MiB, "
                      f"step {row['step_s']:.2f} s, {row['time_vs_floor']:.2f}x floor "
                      f"({time.perf_counter() - started:.0f} s elapsed)")
            save()
    if not args.no_scaling:
        for precision in args.scaling_precision or args.precision:
            if any(r["precision"] == precision for r in results["scaling"]):
                continue
            results["scaling"] += runner({"task": "scaling", "cfg": cfg, "precision": precision,
                                          "methods": args.scaling_methods})
            save()
    if not args.no_multiview:
        for precision in args.multiview_precision or args.precision[:1]:
            for chunk in args.eval_chunks:
                if any(r["precision"] == precision and r["chunk"] == chunk for r in results["multiview"]):
                    continue
                mv = runner({"task": "multiview", "cfg": cfg, "precision": precision, "chunk": chunk})
                results["multiview"].append(mv)
                _progress(f"[{precision}] multi-view {mv['views']} views, chunk {chunk}: peak {mv['peak'] / MIB:.0f} "
                          f"MiB, {mv['seconds']:.1f} s")
                save()
    derive(results)
    try:
        results["environment"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    results["environment"]["wall_s"] = time.perf_counter() - started
    save()
    gc.unfreeze()
    text = to_markdown(results)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    return results


if __name__ == "__main__":
    main()
