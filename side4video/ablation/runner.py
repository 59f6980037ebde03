"""Ablation of side modules: every variant trained side by side on ONE frozen-backbone pass per batch.

Each variant is its own model, optimizer, learning-rate schedule, RNG stream and checkpoint, but they all see the
same batches in the same order with the same augmentation (one loader), and per batch the frozen backbone is tapped
once, for the union of the layers the variants read (and the final embedding if any variant needs it); each variant
then gets the :class:`~side4video.models.SideInputs` of its own ``model.backbone_layers``. Comparing N variants
therefore costs one data pass and one backbone pass per batch instead of N of each.

A variant's step is the engine's :func:`~side4video.engine.step.train_step` on a plain-torch optimizer backend
(``engine/backends.py``: accumulation, clipping, bf16/fp16 autocast): DeepSpeed engines per variant are not needed
for a one-process comparison (``solver.zero_stage`` is ignored), and a variant ends bit-identical to ``train.py`` on
its ``config.yaml`` (fp32 on the CPU without dropout). Training plugins that change pixels or the backbone features
(``on_batch`` / ``on_inputs``, e.g. mixup, SV-Mix) get their own backbone pass in the same loop.

Measured in the same run: per batch the data wait, the backbone pass and every variant's step (synchronised
timers; medians after ``warmup_batches``); the bytes autograd saves for backward per clip; the val top-1 with
``test_crops`` x ``test_clips`` views, also on one backbone pass per chunk of views for all variants.
"""
from __future__ import annotations

import datetime
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..backbones import backbone_identity
from ..config import dump_config, to_plain_dict
from ..data import (
    BadSampleTracker,
    ShardedEvalSampler,
    TrainSampler,
    batch_frames,
    collate_eval,
    collate_train,
    create_dataset,
    create_loader,
    loader_options,
    normalize_frames,
)
from ..engine.backends import TorchBackend
from ..engine.builders import backbone_from_config, load_trainable_weights, model_from_config
from ..engine.checkpoint import RngState, create_checkpoint, weights_state
from ..engine.distributed import default_device
from ..engine.logging_utils import append_jsonl, dump_json, progress_bar, setup_logging
from ..engine.memory import SavedTensorMeter
from ..engine.optim import create_optimizer, create_scheduler
from ..engine.state import TrainState
from ..engine.step import StepParts, train_step
from ..engine.testing import save_scores
from ..errors import DataError, Side4VideoError, TrainingError
from ..files import OutputLock, atomic_save, atomic_write_text
from ..models import SideInputs, TapAssembler, count_parameters, protocol_name
from ..plugins import PluginContext, TrainPlugin, create_plugins, set_up_plugins, validation_model
from ..tasks import ScoreSet, create_task, score_views
from .report import command_line, format_report, machine_description
from .spec import AblationSpec, VariantSpec, describe_modules

MAX_VIEWS_PER_FORWARD = 64      # clips per backbone + model pass at test time (test.py's default --max_views)


class VariantError(Side4VideoError):
    """An input error inside one variant, with the ablation file and the variant named."""


def _plugin_changes_inputs(plugin: TrainPlugin) -> bool:
    kind = type(plugin)
    return kind.on_batch is not TrainPlugin.on_batch or kind.on_inputs is not TrainPlugin.on_inputs


def select_inputs(taps, frames: torch.Tensor, layers: Sequence[int], embedding: bool) -> SideInputs:
    """A model's :class:`SideInputs` from a tap of a superset of its layers (no copy: the same tensors)."""
    index = [taps.layers.index(layer) for layer in layers]
    return SideInputs(frames, [taps.cls_tokens[i] for i in index], [taps.patch_tokens[i] for i in index],
                      list(layers), taps.embedding if embedding else None, frames.shape[1])


class VariantRun:
    """One variant under training: model, plugins, optimizer backend and RNG stream, all its own."""

    def __init__(self, spec: VariantSpec, backbone, device: torch.device, steps_per_epoch: int):
        cfg = spec.cfg
        self.spec, self.name, self.cfg = spec, spec.name, cfg
        self.backbone, self.device = backbone, device
        outside = RngState.capture()
        model = model_from_config(cfg, backbone, seed=int(cfg.seed))   # seeds torch as train.py does
        if cfg.pretrain:
            load_trainable_weights(model, cfg.pretrain, backbone, cfg, allow_other_weights=True)
        model.to(device)
        self.task = create_task(cfg)
        self.plugins = create_plugins(cfg)
        context = PluginContext(cfg=cfg, model=model, backbone=backbone, assembler=TapAssembler(),
                                num_classes=int(cfg.data.num_classes), device=device, task=self.task)
        self.trainable, lr_mult = set_up_plugins(self.plugins, context, cfg.solver.lr_mult)
        if cfg.network.compile:
            model.compile()
        optimizer = create_optimizer(self.trainable, cfg.solver, lr_mult=lr_mult, prefix="model.")
        self.backend = TorchBackend(self.trainable, optimizer, create_scheduler(optimizer, cfg.solver, steps_per_epoch),
                                    device=device, precision=cfg.solver.precision,
                                    accumulation=int(cfg.solver.grad_accumulation_steps),
                                    clip_gradient=float(cfg.solver.clip_gradient or 0.0))
        self.parts = StepParts(backbone=backbone, model=model, task=self.task, assembler=TapAssembler(),
                               plugins=self.plugins)
        self.layers = list(model.backbone_layers)
        self.needs_embedding = bool(model.needs_embedding)
        self.own_pass = any(_plugin_changes_inputs(p) for p in self.plugins)
        self.params = count_parameters(model)
        self.plugin_params = count_parameters(self.trainable.parts)   # trained, but not part of the model tested
        np.random.seed(int(cfg.seed))          # NumPy / Python streams (mixup draws) seeded too: reproducible
        random.seed(int(cfg.seed))
        self.rng = RngState.capture()          # this variant's stream, from right after its seeded init
        outside.restore()
        self.saved_bytes_per_clip: float | None = None
        self.pending: list[tuple[dict, torch.Tensor]] = []
        self.epoch_losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.diverged: str | None = None
        self.eval_metrics: dict[str, Any] | None = None

    @property
    def model(self) -> nn.Module:
        return self.trainable.model

    def run(self, action: Callable[[], Any]) -> Any:
        """``action()`` with this variant's RNG streams (variants never draw from one another's: dropout,
        drop-path, mixup)."""
        outside = RngState.capture()
        self.rng.restore()
        try:
            return action()
        finally:
            self.rng = RngState.capture()
            outside.restore()

    def train_step(self, raw: Mapping[str, Any], frames: torch.Tensor, taps, *, measure: bool = False) -> torch.Tensor:
        """The engine's step for this variant on the shared batch. ``taps``: the shared backbone pass (None for a
        variant with its own pass, whose plugins may change pixels in place: it gets copies)."""
        self.backend.train()
        if self.own_pass:
            batch = self.task.train_batch({**raw, "label": raw["label"].clone()}, frames.clone(), None, self.device)
            inputs = None
        else:
            batch = self.task.train_batch(raw, frames, None, self.device)
            inputs = select_inputs(taps, frames, self.layers, self.needs_embedding)
        meter = SavedTensorMeter.excluding(self.trainable) if measure else None
        loss = train_step(self.parts, batch, self.backend, inputs=inputs,
                          measure=meter.hooks if meter is not None else None)
        if meter is not None:
            self.saved_bytes_per_clip = meter.bytes / frames.shape[0]
        return loss

    def eval_model(self) -> nn.Module:
        """The model validated: a plugin's (e.g. the EMA copy) if one provides it, as the trainer does."""
        return validation_model(self.model, self.plugins)

    def flush(self) -> None:
        """Read the pending losses (one synchronisation); a non-finite one stops this variant (the others go on)."""
        if not self.pending:
            return
        values = torch.stack([loss.float() for _, loss in self.pending]).tolist()
        for (row, _), value in zip(self.pending, values):
            if not np.isfinite(value):
                self.diverged = f"loss {value} at epoch {row['epoch']}, step {row['step']}"
                break
        self.epoch_losses.extend(v for v in values if np.isfinite(v))
        self.pending = []


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def union_request(runs: Sequence[VariantRun]) -> tuple[list[int], bool]:
    """Layers and embedding flag of the one backbone pass that serves every variant of ``runs`` that shares it."""
    sharing = [r for r in runs if not r.own_pass]
    layers = sorted({layer for r in sharing for layer in r.layers})
    return layers, any(r.needs_embedding for r in sharing)


@dataclass
class LoopTimes:
    """Seconds per batch of one training loop (all batches; medians skip the warm-up)."""
    load: list[float] = field(default_factory=list)
    backbone: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    wall: float = 0.0
    batches: int = 0
    backbone_passes: int = 0

    def median(self, values: list[float], warmup: int) -> float:
        kept = values[warmup:] if len(values) > warmup else values
        return statistics.median(kept) if kept else 0.0


class Ablation:
    """Builds the shared pieces (backbone, loaders) once and trains/evaluates groups of variants on them."""

    def __init__(self, spec: AblationSpec, out_dir: Path, log):
        self.spec, self.out_dir, self.log = spec, out_dir, log
        cfg = spec.base_cfg
        self.cfg = cfg
        self.device = default_device()
        self.backbone = backbone_from_config(cfg, self.device)
        self.identity = backbone_identity(self.backbone)
        self.train_set = create_dataset(cfg.data, "train", seed=int(cfg.seed))
        self.sampler = TrainSampler(len(self.train_set), num_replicas=1, rank=0, seed=int(cfg.seed), shuffle=True,
                                    drop_last=True)
        options = loader_options(cfg.data, device_type=self.device.type)
        self.loader = create_loader(self.train_set, batch_size=int(cfg.data.batch_size), sampler=self.sampler,
                                    collate_fn=collate_train, drop_last=True, **options)
        self.accumulation = int(cfg.solver.grad_accumulation_steps)   # the solver is shared by every variant
        batches = len(self.train_set) // int(cfg.data.batch_size)
        self.batches_per_epoch = batches // self.accumulation * self.accumulation
        if self.batches_per_epoch == 0:
            raise DataError(f"{cfg.data.train_list}: {len(self.train_set)} videos are fewer than one optimizer step "
                            f"({cfg.data.batch_size} x {self.accumulation} accumulation)")
        self.steps_per_epoch = self.batches_per_epoch // self.accumulation
        self.val_loader = None
        self.test_set = None
        self.test_loader = None
        self.test_scores: dict[str, ScoreSet] = {}
        self.eval_backbone_passes = 0

    def variant_context(self, name: str) -> str:
        return f"{self.spec.path}: variant '{name}'"

    def new_runs(self, names: Sequence[str]) -> list[VariantRun]:
        runs = []
        for name in names:
            try:
                runs.append(VariantRun(self.spec.variant(name), self.backbone, self.device, self.steps_per_epoch))
            except Side4VideoError as exc:
                raise VariantError(f"{self.variant_context(name)}: {exc}") from None
        return runs

    def train(self, runs: list[VariantRun], epochs: int, *, desc: str = "", validate_every: int = 0,
              measure_bytes: bool = False, on_epoch_end=None) -> LoopTimes:
        """``epochs`` epochs of ``runs`` side by side: one loader, one backbone pass per batch for all variants that
        share it; each variant its own step (timed)."""
        cfg, device = self.cfg, self.device
        times = LoopTimes(steps={r.name: [] for r in runs})
        layers, embedding = union_request(runs)
        any_shared = any(not r.own_pass for r in runs)
        print_every = int(cfg.logging.print_freq)
        start = time.perf_counter()
        for epoch in range(epochs):
            self.train_set.set_epoch(epoch)
            self.sampler.set_epoch(epoch)
            tracker = BadSampleTracker()
            for run in runs:
                run.epoch_losses = []
            progress = None
            if cfg.logging.progress:
                progress = progress_bar(interval=cfg.logging.progress_interval, total=self.batches_per_epoch,
                                        desc=f"{desc}epoch {epoch}", leave=False)
            batches = iter(self.loader)
            epoch_start = time.perf_counter()
            for index in range(self.batches_per_epoch):
                t0 = time.perf_counter()
                raw = next(batches)
                tracker.add(raw["errors"], raw["num_samples"])
                frames = normalize_frames(batch_frames(raw, device), cfg.data.mean, cfg.data.std)
                raw = {**raw, "label": raw["label"].to(device, non_blocking=True)}
                _sync(device)
                t1 = time.perf_counter()
                taps = None
                if any_shared:
                    taps = self.backbone.tap(frames, layers=layers, embedding=embedding)
                    times.backbone_passes += 1
                _sync(device)
                t2 = time.perf_counter()
                times.load.append(t1 - t0)
                times.backbone.append(t2 - t1)
                shift = index % len(runs)       # rotate the order: no variant always runs first after the pass
                for run in runs[shift:] + runs[:shift]:
                    if run.diverged:
                        continue
                    self._step(run, raw, frames, taps, epoch, index, measure_bytes, times)
                    if len(run.pending) >= print_every or index + 1 == self.batches_per_epoch:
                        run.flush()
                        if run.diverged:
                            self.log.warning(f"{run.name}: {run.diverged}; it is stopped, the others go on")
                del taps
                times.batches += 1
                if progress is not None:
                    reference = next((r for r in runs if r.epoch_losses and not r.diverged), None)
                    postfix = {"s/batch": f"{(time.perf_counter() - epoch_start) / (index + 1):.2f}"}
                    if reference is not None:
                        postfix[f"loss({reference.name})"] = f"{reference.epoch_losses[-1]:.3f}"
                    progress.set_postfix(postfix, refresh=False)
                    progress.update(1)
            if progress is not None:
                progress.close()
            tracker.check(float(cfg.data.max_bad_fraction))
            epoch_time = time.perf_counter() - epoch_start
            val = None
            if validate_every and (epoch + 1) % validate_every == 0 and epoch + 1 < epochs:
                val = self.validate([r for r in runs if not r.diverged], f"val {epoch}")
            for run in runs:
                row = {"epoch": epoch, "train_loss": float(np.mean(run.epoch_losses)) if run.epoch_losses else None,
                       "lr": run.backend.lr(), "epoch_time_s": epoch_time, "diverged": run.diverged}
                if val is not None and run.name in val:
                    row["val_top1"] = val[run.name]
                run.history.append(row)
            if on_epoch_end is not None:
                on_epoch_end(epoch, runs)
        times.wall = time.perf_counter() - start
        return times

    def _step(self, run: VariantRun, raw, frames, taps, epoch: int, index: int, measure_bytes: bool,
              times: LoopTimes) -> None:
        measure = measure_bytes and run.saved_bytes_per_clip is None
        row = {"epoch": epoch, "step": index, "lr": run.backend.lr()}
        begin = time.perf_counter()
        try:
            loss = run.run(lambda: run.train_step(raw, frames, taps, measure=measure))
        except Side4VideoError as exc:
            raise VariantError(f"{self.variant_context(run.name)}: {exc}") from None
        except Exception as exc:            # a bug keeps its traceback; the note says where it happened
            exc.add_note(f"in {self.variant_context(run.name)}")
            raise
        _sync(self.device)
        if not measure:     # the hooked step is slower: not timed
            times.steps[run.name].append(time.perf_counter() - begin)
        run.pending.append((row, loss))

    # -- evaluation ----------------------------------------------------------------------------------------------
    def _eval_loader(self, split: str):
        cfg = self.cfg
        if split == "val":
            dataset = create_dataset(cfg.data, "val", seed=int(cfg.seed))
        else:
            dataset = create_dataset(cfg.data, "test", test_crops=self.spec.test_crops,
                                     test_clips=self.spec.test_clips, seed=int(cfg.seed))
        options = loader_options(cfg.data, device_type=self.device.type, persistent_workers=False)
        loader = create_loader(dataset, batch_size=int(cfg.data.batch_size),
                               sampler=ShardedEvalSampler(len(dataset), 1, 0), collate_fn=collate_eval, **options)
        return dataset, loader

    def validate(self, runs: list[VariantRun], desc: str) -> dict[str, float]:
        """1-view val top-1 of every variant (one backbone pass per batch)."""
        if self.val_loader is None:
            self.val_set, self.val_loader = self._eval_loader("val")
        scores = shared_scores(self.backbone, {r.name: r.eval_model() for r in runs}, self.val_loader, self.device,
                               cfg=self.cfg, flip_permutation=None, progress=bool(self.cfg.logging.progress),
                               desc=desc, counter=self)
        top1 = {name: s.metrics(int(self.cfg.data.num_classes))["top1"] for name, s in scores.items()}
        self.log.info(f"{desc}: " + "  ".join(f"{n} {v:.1f}" for n, v in top1.items()))
        return top1

    def test(self, runs: list[VariantRun]) -> dict[str, dict[str, Any]]:
        """``test_crops`` x ``test_clips`` views of the val list, softmax per view then mean, all variants on one
        backbone pass per chunk of views."""
        if self.test_loader is None:
            self.test_set, self.test_loader = self._eval_loader("test")
        scores = shared_scores(self.backbone, {r.name: r.eval_model() for r in runs}, self.test_loader, self.device,
                               cfg=self.cfg, flip_permutation=self.test_set.flip_permutation(),
                               progress=bool(self.cfg.logging.progress), desc="test", counter=self)
        self.test_scores = scores
        out = {}
        for name, score in scores.items():
            run = next(r for r in runs if r.name == name)
            out[name] = run.task.evaluation(score).metrics
        return out


@torch.no_grad()
def shared_scores(backbone, models: Mapping[str, nn.Module], loader, device: torch.device, *, cfg,
                  flip_permutation: torch.Tensor | None = None, progress: bool = False, desc: str = "eval",
                  max_views_per_forward: int = MAX_VIEWS_PER_FORWARD, counter=None) -> dict[str, ScoreSet]:
    """``tasks.views.collect_scores`` for several models at once (the same loop: ``score_views``): per batch the
    views are flattened, split into chunks of ``max_views_per_forward`` clips (as test.py does), and each chunk is
    tapped ONCE for the union of the models' layers; every model scores it. Returns name → ScoreSet."""
    layers = sorted({layer for m in models.values() for layer in m.backbone_layers})
    embedding = any(bool(m.needs_embedding) for m in models.values())

    def forward(frames: torch.Tensor, mask) -> dict[str, torch.Tensor]:
        b, v = frames.shape[:2]
        clips = frames.flatten(0, 1)
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in models}
        for start in range(0, clips.shape[0], max_views_per_forward):
            part = clips[start:start + max_views_per_forward]
            taps = backbone.tap(part, layers=layers, embedding=embedding)
            if counter is not None:
                counter.eval_backbone_passes += 1
            for name, model in models.items():
                inputs = select_inputs(taps, part, model.backbone_layers, bool(model.needs_embedding))
                chunks[name].append(model(inputs))
        return {name: torch.cat(chunks[name]).reshape(b, v, -1) for name in models}

    was_training = {name: m.training for name, m in models.items()}
    for model in models.values():
        model.eval()
    try:
        return score_views(loader, device, forward, list(models), mean=cfg.data.mean, std=cfg.data.std,
                           precision=cfg.solver.precision, progress=progress, desc=desc,
                           flip_permutation=flip_permutation, progress_interval=float(cfg.logging.progress_interval),
                           num_classes=int(cfg.data.num_classes))
    finally:
        for name, model in models.items():
            model.train(was_training[name])


def save_variant(run: VariantRun, folder: Path, identity: dict, *, epoch: int, metrics: dict | None = None) -> Path:
    """``folder/checkpoint.pt`` in the trainer's checkpoint layout (test.py tests it; train.py can resume it) and
    ``folder/config.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = run.cfg
    backend = run.backend
    state = TrainState(epoch=epoch, step_in_epoch=0, global_step=backend.micro_steps,
                       best_metric=float((metrics or {}).get("top1", -1.0)))
    checkpoint = create_checkpoint(
        position=state.position(), world_size=1, zero_stage=0,
        weights=weights_state(run.model, run.eval_model(), run.trainable.parts, run.plugins),
        optimizer=backend.optimizer_states(), scheduler=backend.scheduler_state(), rng=[run.rng.to_checkpoint()],
        counters=backend.counters(int(cfg.data.batch_size) * int(cfg.data.num_sample)), backbone=identity,
        head=cfg.network.head, num_classes=int(cfg.data.num_classes), config=to_plain_dict(cfg),
        metrics=to_plain_dict(metrics or {}), monitor=run.task.monitor,
        ablation={"variant": run.name, "trained_with": "side4video ablation (shared backbone pass)"})
    path = folder / "checkpoint.pt"
    atomic_save(checkpoint, path)
    dump_config(cfg, folder / "config.yaml")
    return path


def run_ablation(spec: AblationSpec, out_dir: str | Path | None = None, *, report: str | Path | None = None,
                 check: bool = True, command: str | None = None) -> dict[str, Any]:
    """Train every variant of ``spec`` side by side, test them, write checkpoints, ``results.json`` and the report
    (``out_dir/ablation.md``, and ``report`` if given). Returns the results. The output folder is locked for the
    run (a second ablation on it stops with one line)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainingError("the ablation runs in one process (it shares one backbone pass between the variants); "
                            "launch it with python, not torchrun")
    out_dir = Path(out_dir or spec.output or Path("exp") / "ablation" / spec.path.stem)
    with OutputLock(out_dir, what="ablation run"):
        return _run(spec, out_dir, report=report, check=check, command=command)


def _run(spec: AblationSpec, out_dir: Path, *, report, check: bool, command: str | None) -> dict[str, Any]:
    log = setup_logging(out_dir, True, "ablation.log")
    for note in spec.notes:
        log.info(note)
    ablation = Ablation(spec, out_dir, log)
    names = [v.name for v in spec.variants]
    runs = ablation.new_runs(names)
    layers, embedding = union_request(runs)
    cfg = spec.base_cfg
    log.info(f"ablation {spec.path}: {len(runs)} variants ({', '.join(names)}) on frozen {ablation.backbone.info.arch}"
             f" ({ablation.device.type}); one backbone pass per batch for layers {layers}"
             f"{' + embedding' if embedding else ''}; {spec.epochs} epoch(s) x {ablation.batches_per_epoch} batches;"
             f" output {out_dir}")
    for run in runs:
        (out_dir / run.name).mkdir(parents=True, exist_ok=True)
        (out_dir / run.name / "metrics.jsonl").unlink(missing_ok=True)
        log.info(f"  {run.name}: {describe_modules(run.cfg)}; {run.params:,} trainable parameters"
                 + ("; own backbone pass (its plugins change the inputs)" if run.own_pass else "")
                 + (f"; starts from {run.cfg.pretrain}" if run.cfg.pretrain else ""))

    def epoch_end(epoch: int, group: list[VariantRun]) -> None:
        for run in group:
            append_jsonl(out_dir / run.name / "metrics.jsonl", run.history[-1])
            if not run.diverged:
                save_variant(run, out_dir / run.name, ablation.identity, epoch=epoch + 1)
        log.info(f"epoch {epoch}: train loss " + "  ".join(
            f"{r.name} {r.history[-1]['train_loss']:.3f}" if r.history[-1]["train_loss"] is not None else f"{r.name} -"
            for r in group))

    times = ablation.train(runs, spec.epochs, validate_every=spec.val_every, measure_bytes=True,
                           on_epoch_end=epoch_end)
    train_passes = times.backbone_passes
    alive = [r for r in runs if not r.diverged]
    log.info(f"testing {len(alive)} variants ({spec.test_crops} crops x {spec.test_clips} clips)")
    ablation.eval_backbone_passes = 0
    tested = ablation.test(alive) if alive else {}
    protocol = protocol_name(int(cfg.data.num_segments) * int(cfg.data.seg_length), spec.test_crops, spec.test_clips)
    for run in alive:
        run.eval_metrics = tested[run.name]
        save_variant(run, out_dir / run.name, ablation.identity, epoch=spec.epochs, metrics=tested[run.name])
        save_scores(out_dir / run.name / f"scores_{protocol}.npz", ablation.test_scores[run.name],
                    ablation.test_set.class_names, protocol, "prob")
        append_jsonl(out_dir / run.name / "metrics.jsonl", {"epoch": spec.epochs - 1, "test": tested[run.name]})

    results = _results(spec, ablation, runs, times, out_dir, command)
    results["backbone_passes"]["train"] = train_passes
    del runs, alive
    if check and spec.check:
        saving = results["saving"]
        step_ms = {row["name"]: row["step_ms"] for row in results["variants"]}
        results["check"] = separate_check(ablation, spec, saving["load_ms"], saving["backbone_ms"], step_ms)
    atomic_write_text(out_dir / "results.json", dump_json(results))
    text = format_report(results)
    targets = [out_dir / "ablation.md"] + ([Path(report)] if report else [])
    for target in targets:
        atomic_write_text(target, text)
    log.info("\n" + text)
    log.info(f"wrote {', '.join(str(t) for t in targets)}, {out_dir / 'results.json'} and DIR/<variant>/checkpoint.pt")
    return results


def _results(spec: AblationSpec, ablation: Ablation, runs: list[VariantRun], times: LoopTimes, out_dir: Path,
             command: str | None) -> dict[str, Any]:
    cfg = spec.base_cfg
    warm = spec.warmup_batches
    step_ms = {r.name: 1000 * times.median(times.steps[r.name], warm) if times.steps[r.name] else None for r in runs}
    reference_ms = step_ms.get(spec.reference)
    load_ms = 1000 * times.median(times.load, warm)
    backbone_ms = 1000 * times.median(times.backbone, warm)
    steps_total = sum(v for v in step_ms.values() if v is not None)
    sharing = [r for r in runs if not r.own_pass]
    # Separate runs: every variant reads the data; those on the shared pass each run the backbone too (a variant
    # with its own pass has that in its step time already).
    shared_ms = load_ms + (backbone_ms if sharing else 0.0) + steps_total
    separate_ms = len(runs) * load_ms + len(sharing) * backbone_ms + steps_total
    ratio = shared_ms / separate_ms if separate_ms > 0 else 1.0
    results: dict[str, Any] = {
        "config": str(spec.path), "base": str(spec.base_path), "command": command or command_line(None),
        "machine": machine_description(ablation.device), "date": datetime.date.today().isoformat(),
        "output": str(out_dir), "reference": spec.reference, "num_variants": len(runs), "notes": list(spec.notes),
        "budget": {"epochs": spec.epochs, "val_every": spec.val_every, "test_crops": spec.test_crops,
                   "test_clips": spec.test_clips},
        "solver": f"{cfg.solver.optim}, lr {cfg.solver.lr:g}, {cfg.solver.type}, warm-up {cfg.solver.lr_warmup_step:g} "
                  f"epoch(s), weight decay {cfg.solver.weight_decay:g}, {cfg.solver.precision}",
        "seed": int(cfg.seed), "frames": int(cfg.data.num_segments) * int(cfg.data.seg_length),
        "batches_per_epoch": ablation.batches_per_epoch, "clips_per_batch": int(cfg.data.batch_size) *
        int(cfg.data.num_sample), "warmup_batches": warm, "timed_batches": max(times.batches - warm, 0),
        "test_videos": len(ablation.test_set) if ablation.test_set is not None else 0,
        "variants": [], "backbone_passes": {
            "train": times.backbone_passes, "train_batches": times.batches, "eval": ablation.eval_backbone_passes,
            "eval_chunks_note": f"one per chunk of at most {MAX_VIEWS_PER_FORWARD} views, for all variants"},
    }
    for run in runs:
        metrics = run.eval_metrics or {}
        results["variants"].append({
            "name": run.name, "modules": run.spec.label or describe_modules(run.cfg), "params": run.params,
            "top1": metrics.get("top1"), "top5": metrics.get("top5"), "test": metrics or None,
            "saved_bytes_per_clip": run.saved_bytes_per_clip, "step_ms": step_ms[run.name],
            "relative_step": (step_ms[run.name] / reference_ms) if step_ms[run.name] and reference_ms else None,
            "own_pass": run.own_pass, "plugins": [p.name for p in run.plugins], "plugin_params": run.plugin_params,
            "diverged": run.diverged, "pretrain": run.cfg.pretrain, "history": run.history,
            "checkpoint": None if run.diverged else str(out_dir / run.name / "checkpoint.pt"),
            "config_source": run.spec.source,
        })
    results["saving"] = {
        "load_ms": load_ms, "backbone_ms": backbone_ms, "steps_ms": steps_total, "layers": union_request(runs)[0],
        "embedding": union_request(runs)[1], "sharing": len(sharing), "shared_ms": shared_ms,
        "separate_ms": separate_ms, "ratio": ratio, "train_wall_s": times.wall,
        "separate_wall_estimate_s": times.wall / ratio if ratio > 0 else None,
    }
    return results


def separate_check(ablation: Ablation, spec: AblationSpec, load_ms: float, backbone_ms: float,
                   step_ms: Mapping[str, float | None]) -> dict[str, Any]:
    """Train the ``timing.check`` variants again from scratch for ``check_epochs``: side by side on one backbone pass,
    then each alone (its own loader pass and backbone pass), and compare the wall times and the final weights."""
    log = ablation.log
    names = spec.check
    log.info(f"check: {', '.join(names)} side by side, then each alone, {spec.check_epochs} epoch(s) each")
    shared_runs = ablation.new_runs(names)
    shared = ablation.train(shared_runs, spec.check_epochs, desc="check shared ")
    each: dict[str, float] = {}
    differs = []
    for run_shared in shared_runs:
        (alone,) = ablation.new_runs([run_shared.name])
        loop = ablation.train([alone], spec.check_epochs, desc=f"check {alone.name} ")
        each[alone.name] = loop.wall
        a, b = run_shared.model.state_dict(), alone.model.state_dict()
        if set(a) != set(b) or not all(torch.equal(a[k], b[k]) for k in a):
            differs.append(alone.name)
    separate = sum(each.values())
    steps = sum(step_ms[n] or 0.0 for n in names)
    own = sum(1 for r in shared_runs if r.own_pass)
    sharing = len(names) - own
    predicted_shared = load_ms + (backbone_ms if sharing else 0.0) + steps
    predicted_separate = len(names) * load_ms + sharing * backbone_ms + steps
    result = {"variants": list(names), "epochs": spec.check_epochs, "batches": shared.batches,
              "shared_s": shared.wall, "separate_s": separate, "separate_each_s": each,
              "ratio": shared.wall / separate if separate > 0 else None,
              "predicted_ratio": predicted_shared / predicted_separate if predicted_separate > 0 else None,
              "identical": not differs, "differs": differs}
    log.info(f"check: shared {shared.wall:.1f} s, separate {separate:.1f} s (ratio {result['ratio']:.2f}); weights "
             f"{'identical' if not differs else 'differ for ' + ', '.join(differs)}")
    return result


__all__ = ["VariantRun", "Ablation", "VariantError", "LoopTimes", "select_inputs", "union_request", "shared_scores",
           "save_variant", "run_ablation", "separate_check"]
