"""Training with DeepSpeed on one CPU, one GPU or many nodes.

Only the trainable model (side network or head) and the plugins' trainable parts are handed to DeepSpeed: no
frozen backbone tensor is in any optimizer group, ZeRO partition or checkpoint. Every run, CPU included, goes
through the same path. The loop itself is short; extras (mixup/cutmix, EMA, SV-Mix, ...) are training plugins
(``engine/plugins/``).

No host–device synchronisation happens inside a step: losses stay on the device and are read (all-reduced,
checked for finiteness, logged) every ``logging.print_freq`` steps, before checkpoints and at epoch ends.
"""
from __future__ import annotations

import fcntl
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones import backbone_identity
from ..config import dump_config, to_plain_dict
from ..errors import CheckpointError, TrainingError
from ..models import count_parameters, create_assembler, model_inputs
from .builders import backbone_from_config, check_fits, load_trainable_weights, model_from_config
from .checkpoint import (FORMAT, atomic_copy, atomic_save, capture_rng_state, check_backbone_identity, load_checkpoint,
                         load_optimizer_state, optimizer_state, remove_stale_temporaries, restore_rng_state,
                         restore_weights, weights_state)
from .distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier, setup_distributed
from .evaluator import collect_scores
from .logging_utils import TensorBoard, append_jsonl, append_jsonl_rows, progress_bar, rewrite_jsonl, setup_logging
from .metrics import plot_curves, save_confusion
from .optim import build_optimizer, build_scheduler, lr_factor_fn
from .plugins import (PluginContext, TrainBatch, build_plugins, classification_loss, set_up_plugins,
                      validation_model)

# Solver keys whose change on resume changes the learning-rate schedule.
SCHEDULE_KEYS = ("lr", "epochs", "lr_warmup_step", "type", "lr_steps", "lr_decay", "min_lr")


class TrainingDiverged(TrainingError):
    """The loss or the weights became NaN/inf; the last good checkpoint is kept."""


class OutputInUse(TrainingError):
    """Another run is writing to the same output folder."""


def default_output_dir(cfg) -> Path:
    stem = Path(cfg.config_path).stem if cfg.config_path else "run"
    return Path("exp") / str(cfg.data.dataset) / str(cfg.network.arch).replace("/", "-").replace(".json", "") / stem


def deepspeed_config(cfg, micro_batch: int, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config, all from the YAML's ``solver`` section."""
    solver = cfg.solver
    accumulation = int(solver.grad_accumulation_steps)
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro_batch * accumulation * world_size,
        "gradient_clipping": float(solver.clip_gradient or 0.0),
        "zero_optimization": {"stage": int(solver.zero_stage)},
        "zero_allow_untested_optimizer": True,   # our AdamW/SGD with parameter groups
        "steps_per_print": 10 ** 12,
        "wall_clock_breakdown": False,
    }
    if solver.precision in ("bf16", "fp16"):
        # Autocast keeps fp32 master weights (like the reference's AMP) and leaves BatchNorm in fp32.
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16" if solver.precision == "bf16" else "float16"}
    return ds


class OutputLock:
    """An exclusive lock on ``<output>/.lock`` held for the whole run, so that two runs never write one folder."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self.handle = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise OutputInUse(f"{self.path.parent} is in use by another training run ({owner}); wait for it to end or "
                              "pass another --output") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


class Trainer:
    """``Trainer(cfg, output_dir).fit()`` trains, validates every ``logging.eval_freq`` epochs and checkpoints.

    ``plugins`` adds plugin objects to those the config lists (tests inject fault hooks this way).
    """

    def __init__(self, cfg, output_dir: str | Path | None = None, plugins: list | None = None):
        self.cfg = cfg
        self.output_dir = Path(output_dir or cfg.output or default_output_dir(cfg))
        self.dist: DistInfo = setup_distributed()
        self.lock = OutputLock(self.output_dir)
        if self.dist.is_main:
            self.lock.acquire()
        self.log = setup_logging(self.output_dir, self.dist.is_main)
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.steps_path = self.output_dir / "steps.jsonl"
        self.extra_plugins = list(plugins or [])
        self.progress_state = {"epoch": None, "step": None}

    # -- set-up ---------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        import deepspeed
        from ..data import (ShardedEvalSampler, TrainSampler, build_dataset, build_loader, collate_eval,
                            collate_train, loader_options)
        cfg, dist = self.cfg, self.dist
        if dist.is_main:
            for stale in remove_stale_temporaries(self.ckpt_dir):
                self.log.info(f"removed {stale}, left by a checkpoint write that was killed")
        self.backbone = backbone_from_config(cfg, dist.device)
        self.identity = backbone_identity(self.backbone)
        self.assembler = create_assembler(cfg.network.assembler)
        model = model_from_config(cfg, self.backbone, seed=cfg.seed)
        # Python's and NumPy's global generators (timm's mixup draws from NumPy) start from the seed too, per rank
        # (checkpoints save and restore them with torch's, so a resumed run continues the same draws)
        random.seed(cfg.seed + dist.rank)
        np.random.seed(cfg.seed + dist.rank)
        if cfg.pretrain:
            load_trainable_weights(model, cfg.pretrain, self.backbone, cfg)
            self.log.info(f"loaded trainable weights from {cfg.pretrain}")
        model.to(dist.device)
        self.trainable_params = count_parameters(model)

        frame_sampler = self.assembler.frame_sampler(cfg.data)
        self.train_set = build_dataset(cfg.data, "train", seed=cfg.seed, sampler=frame_sampler)
        self.val_set = build_dataset(cfg.data, "val", seed=cfg.seed, sampler=frame_sampler)
        self.sampler = TrainSampler(len(self.train_set), num_replicas=dist.world_size, rank=dist.rank,
                                    seed=cfg.seed, shuffle=True, drop_last=True)
        options = loader_options(cfg.data, device_type=dist.device.type)
        self.loader = build_loader(self.train_set, batch_size=cfg.data.batch_size, sampler=self.sampler,
                                   collate_fn=self.assembler.collate_fn(True) or collate_train, drop_last=True,
                                   **options)
        self.val_loader = build_loader(self.val_set, batch_size=cfg.data.batch_size,
                                       sampler=ShardedEvalSampler(len(self.val_set), dist.world_size, dist.rank),
                                       collate_fn=self.assembler.collate_fn(False) or collate_eval, **options)
        accumulation = int(cfg.solver.grad_accumulation_steps)
        batches = len(self.train_set) // (cfg.data.batch_size * dist.world_size)
        # An epoch ends on an accumulation boundary, so epoch-end checkpoints never split an optimizer step.
        self.batches_per_epoch = batches // accumulation * accumulation
        if self.batches_per_epoch == 0:
            from ..errors import DataError
            raise DataError(f"{cfg.data.train_list}: {len(self.train_set)} videos are fewer than one optimizer step "
                            f"({cfg.data.batch_size} x {dist.world_size} processes x {accumulation} accumulation)")
        steps_per_epoch = self.batches_per_epoch // accumulation

        self.plugins = build_plugins(cfg) + self.extra_plugins
        context = PluginContext(cfg=cfg, model=model, backbone=self.backbone, assembler=self.assembler,
                                num_classes=int(cfg.data.num_classes), device=dist.device)
        trainable, lr_mult = set_up_plugins(self.plugins, context, cfg.solver.lr_mult)
        if cfg.network.compile:
            model.compile()
        optimizer = build_optimizer(trainable, cfg.solver, lr_mult=lr_mult, prefix="model.")
        scheduler = build_scheduler(optimizer, cfg.solver, steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch
        micro_batch = cfg.data.batch_size * cfg.data.num_sample
        self.engine, _, _, _ = deepspeed.initialize(model=trainable, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=deepspeed_config(cfg, micro_batch, dist.world_size))
        self.tb = TensorBoard(self.output_dir / "tb", cfg.logging.tensorboard and dist.is_main)

    @property
    def model(self) -> nn.Module:
        return self.engine.module.model

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _save(self, name: str, position: dict[str, Any], metrics: dict | None = None) -> None:
        """All processes call this (optimizer partitions and RNG states are gathered); rank 0 writes.

        Weights that are no longer finite are never written. The previous ``last.pt`` is kept aside until a
        finite loss has been computed with the new weights (see :meth:`_confirm_checkpoint`).
        """
        finite = all(torch.isfinite(p).all() for p in self.engine.module.parameters())
        if all_reduce_sum([float(not finite)], self.dist.device)[0]:
            raise TrainingDiverged(f"weights became non-finite at epoch {position['epoch']}, global step "
                                   f"{position['global_step']}; stopped. {self._last_good()} "
                                   "Lower solver.lr or enable solver.clip_gradient.")
        zero = self.engine.zero_optimization()
        optimizer_states = all_gather_objects(optimizer_state(self.engine)) if zero else [optimizer_state(self.engine)]
        rng_states = all_gather_objects(capture_rng_state())
        if self.dist.is_main:
            engine = self.engine
            state = {
                "format": FORMAT, **position, "world_size": self.dist.world_size,
                "zero_stage": int(self.cfg.solver.zero_stage),
                # eval_model: what validation scored (e.g. the EMA copy), so that test.py evaluates the weights
                # best.pt was chosen by
                **weights_state(self.model, self.validation_model(), self.engine.module.parts, self.plugins),
                "optimizer": optimizer_states, "scheduler": engine.lr_scheduler.state_dict(), "rng": rng_states,
                "engine_counters": {"micro_steps": engine.micro_steps, "global_steps": engine.global_steps,
                                    "global_samples": engine.global_samples},
                "backbone": self.identity, "head": self.cfg.network.head, "num_classes": self.cfg.data.num_classes,
                "config": to_plain_dict(self.cfg), "metrics": metrics or {},
            }
            target = self.ckpt_dir / name
            if name == "last.pt" and target.is_file():
                os.replace(target, self._previous_path)
            atomic_save(state, target)
        self.last_saved_step = position["global_step"]
        barrier()

    @property
    def _previous_path(self) -> Path:
        return self.ckpt_dir / ".last.previous.pt"

    def _confirm_checkpoint(self) -> None:
        """The newest last.pt produced a finite loss: the one kept aside is no longer needed."""
        if self.dist.is_main:
            self._previous_path.unlink(missing_ok=True)

    def _last_good(self) -> str:
        """Where the last good checkpoint is, for the divergence message (rolls last.pt back if needed)."""
        last = self.ckpt_dir / "last.pt"
        if self.dist.is_main and self.unconfirmed and self._previous_path.is_file():
            os.replace(self._previous_path, last)     # the newest one's weights gave a non-finite loss
        elif self.dist.is_main and self.unconfirmed and last.is_file():
            last.unlink()
        barrier()
        if not last.is_file():
            return "No checkpoint was written before it."
        saved = load_checkpoint(last)
        return (f"The last good checkpoint is {last} (epoch {saved['epoch']}, step {saved['step_in_epoch']} of that "
                f"epoch, global step {saved['global_step']}); resume from it with a lower solver.lr.")

    def _resume_path(self) -> Path | None:
        resume = self.cfg.resume
        if not resume:
            return None
        if str(resume) == "auto":
            path = self.ckpt_dir / "last.pt"
            return path if path.is_file() else None
        return Path(resume)

    def _restore(self, path: Path) -> dict[str, Any]:
        state = load_checkpoint(path)
        if state.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a side4video training checkpoint; use it as 'pretrain:' instead")
        check_backbone_identity(state, self.identity, path)
        if state.get("zero_stage", 0) and state["world_size"] != self.dist.world_size:
            raise CheckpointError(f"{path} holds ZeRO optimizer partitions of {state['world_size']} processes; "
                                  f"resume it with the same number (now {self.dist.world_size})")
        check_fits(self.model, state["model"], state, path, self.cfg)
        restore_weights(state, self.model, self.validation_model(), self.engine.module.parts, self.plugins)
        try:
            load_optimizer_state(self.engine, state["optimizer"], min(self.dist.rank, len(state["optimizer"]) - 1))
        except ValueError as exc:   # e.g. "loaded state dict has a different number of parameter groups"
            raise CheckpointError(f"{path}: its optimizer state does not fit this run's parameter groups ({exc}); it "
                                  "was written with other plugins or solver.lr_mult, or by an older version. Start "
                                  "from its weights with pretrain: instead of resuming") from None
        self.engine.lr_scheduler.load_state_dict(state["scheduler"])
        self._apply_schedule_changes(state)
        counters = state.get("engine_counters")
        if counters:
            self.engine.micro_steps = counters["micro_steps"]
            self.engine.global_steps = counters["global_steps"]
            self.engine.global_samples = counters["global_samples"]
        rng = state["rng"]
        restore_rng_state(rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0])
        self.log.info(f"resumed from {path}: epoch {state['epoch']}, step {state['step_in_epoch']} of that epoch")
        return state

    def _apply_schedule_changes(self, state: dict[str, Any]) -> None:
        """The schedule continues from the restored step with the current config's solver settings (a changed
        solver.lr is used, with a warning), and every group's lr is set for that step right away."""
        saved = state.get("config", {}).get("solver", {})
        changed = {k: (saved.get(k), self.cfg.solver[k]) for k in SCHEDULE_KEYS
                   if k in saved and saved.get(k) != self.cfg.solver[k]}
        if changed:
            listing = ", ".join(f"solver.{k} {old} -> {new}" for k, (old, new) in changed.items())
            self.log.warning(f"resuming with a changed schedule ({listing}); the schedule continues from step "
                             f"{state['engine_counters']['global_steps'] if 'engine_counters' in state else '?'} "
                             "with the new values")
        scheduler = self.engine.lr_scheduler
        factor = lr_factor_fn(self.cfg.solver, self.steps_per_epoch)
        scheduler.base_lrs = [self.cfg.solver.lr * group.get("lr_mult", 1.0) for group in scheduler.optimizer.param_groups]
        scheduler.lr_lambdas = [factor] * len(scheduler.base_lrs)
        step = scheduler.last_epoch
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * factor(step)
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]

    # -- the loop ---------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        try:
            return self._fit()
        finally:
            self.lock.release()

    def _fit(self) -> dict[str, Any]:
        self._build()
        cfg, dist = self.cfg, self.dist
        start_epoch, skip_batches, global_step, best_top1 = int(cfg.solver.start_epoch), 0, 0, -1.0
        epoch_totals = {"loss_sum": 0.0, "loss_count": 0, "clips": 0}
        resume_path = self._resume_path()
        self.last_saved_step, self.unconfirmed = None, False
        if resume_path is not None:
            state = self._restore(resume_path)
            start_epoch, skip_batches = state["epoch"], state["step_in_epoch"]
            global_step, best_top1 = state["global_step"], state["best_top1"]
            epoch_totals.update(state.get("epoch_totals", {}))
            self.last_saved_step = global_step
            if dist.is_main:     # drop what the resumed run replays
                rewrite_jsonl(self.steps_path, lambda row: row["global_step"] <= global_step)
                rewrite_jsonl(self.metrics_path, lambda row: row["epoch"] < start_epoch)
        elif dist.is_main:
            for stale in (self.metrics_path, self.steps_path):
                stale.unlink(missing_ok=True)
        if dist.is_main:   # only once the run has really started (a failed resume leaves the old config)
            dump_config(cfg, self.output_dir / "config.yaml")
        self.log.info(f"{cfg.network.head} on frozen {self.backbone.info.arch}: {self.trainable_params:,} trainable "
                      f"parameters; {len(self.train_set)} train / {len(self.val_set)} val videos; "
                      f"{dist.world_size} process(es) on {dist.device.type}; output {self.output_dir}")
        summary: dict[str, Any] = {}
        train_start = time.time()
        for epoch in range(start_epoch, int(cfg.solver.epochs)):
            global_step = self._train_epoch(epoch, skip_batches, global_step, best_top1, epoch_totals)
            skip_batches = 0
            row = self._end_epoch(epoch, epoch_totals)
            improved = row.get("val_top1") is not None and row["val_top1"] > best_top1
            if improved:
                best_top1 = row["val_top1"]
            epoch_totals = {"loss_sum": 0.0, "loss_count": 0, "clips": 0}
            self._save("last.pt", self._position(epoch + 1, 0, global_step, best_top1, epoch_totals), row)
            self.unconfirmed = True
            if improved and dist.is_main:
                atomic_copy(self.ckpt_dir / "last.pt", self.ckpt_dir / "best.pt")
            barrier()
            summary = row
        self._confirm_checkpoint()
        summary = dict(summary, best_val_top1=best_top1 if best_top1 >= 0 else None,
                       train_time_s=time.time() - train_start, trainable_params=self.trainable_params,
                       output_dir=str(self.output_dir))
        if dist.is_main:
            (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            if self.metrics_path.is_file():
                plot_curves(self.metrics_path, self.output_dir / "curves.png")
            best = f"best val top-1 {best_top1:.2f}%" if best_top1 >= 0 else "no validation"
            self.log.info(f"finished: {best}; outputs in {self.output_dir} (checkpoints/best.pt, checkpoints/last.pt, "
                          "metrics.jsonl, curves.png, tb/)")
        self.tb.close()
        return summary

    @staticmethod
    def _position(epoch: int, step_in_epoch: int, global_step: int, best_top1: float,
                  epoch_totals: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step, "best_top1": best_top1,
                "epoch_totals": dict(epoch_totals)}

    def _train_epoch(self, epoch: int, skip_batches: int, global_step: int, best_top1: float,
                     totals: dict[str, Any]) -> int:
        from ..data import BadSampleTracker
        cfg, dist, engine = self.cfg, self.dist, self.engine
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(skip_batches * cfg.data.batch_size)
        engine.train()
        tracker = BadSampleTracker()
        save_every = int(cfg.logging.save_freq_steps or 0)
        print_every = int(cfg.logging.print_freq)
        accumulation = int(cfg.solver.grad_accumulation_steps)
        pending: list[tuple[dict[str, Any], torch.Tensor]] = []   # steps whose loss is still on the device
        epoch_start, clips_at_start = time.time(), totals["clips"]
        progress = None
        if dist.is_main and cfg.logging.progress:
            progress = progress_bar(interval=cfg.logging.progress_interval, total=self.batches_per_epoch,
                                    initial=skip_batches, desc=f"epoch {epoch}", leave=False)
        batches = iter(self.loader)
        self.progress_state = {"epoch": epoch, "step": skip_batches}
        self.data_wait = 0.0
        for batch_index in range(skip_batches, self.batches_per_epoch):
            waited = time.perf_counter()
            batch = next(batches)
            self.data_wait += time.perf_counter() - waited
            tracker.add(batch["errors"], batch["num_samples"])
            lr = engine.get_lr()[0]          # the rate this step uses (the scheduler advances in step())
            boundary = engine.is_gradient_accumulation_boundary()
            loss = self._train_step(batch)
            global_step += 1
            if boundary:
                for plugin in self.plugins:
                    plugin.after_step(engine.global_steps, self.model)
            totals["clips"] += batch["num_samples"] * dist.world_size
            pending.append(({"epoch": epoch, "step": batch_index, "global_step": global_step, "lr": lr}, loss))
            self.progress_state = {"epoch": epoch, "step": batch_index + 1}
            at_boundary = (batch_index + 1) % accumulation == 0
            want_save = (save_every and at_boundary and global_step % save_every == 0
                         and batch_index + 1 < self.batches_per_epoch)
            if len(pending) >= print_every or want_save or batch_index + 1 == self.batches_per_epoch:
                self._flush(pending, totals, progress, epoch_start, clips_at_start)
                pending = []
            if want_save:
                self._save("last.pt", self._position(epoch, batch_index + 1, global_step, best_top1, totals))
                self.unconfirmed = True
            if progress is not None:
                progress.update(1)
        if progress is not None:
            progress.close()
        self.epoch_time = time.time() - epoch_start
        self.epoch_clips = totals["clips"] - clips_at_start
        self._check_bad_samples(tracker, epoch)
        return global_step

    def _train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One micro-batch: plugins, frozen backbone, model, loss, DeepSpeed backward and step. Returns the loss
        (a device tensor: reading it would synchronise)."""
        from ..data import normalize_frames
        cfg, device = self.cfg, self.dist.device
        frames = normalize_frames(batch["frames"].to(device, non_blocking=True), cfg.data.mean, cfg.data.std)
        labels = batch["label"].to(device, non_blocking=True)
        mask = batch.get("mask")
        step = TrainBatch(frames=frames, labels=labels, targets=labels,
                          mask=None if mask is None else mask.to(device, non_blocking=True))
        for plugin in self.plugins:
            step = plugin.on_batch(step)
        inputs = model_inputs(self.backbone, self.model, step.frames, self.assembler, step.mask)
        for plugin in self.plugins:
            inputs = plugin.on_inputs(inputs, step)
        logits = self.engine(inputs)
        loss = classification_loss(logits, step.targets, cfg.solver.smoothing)
        total = loss
        for plugin in self.plugins:
            for term in plugin.loss(logits, inputs, step, self.model).values():
                total = total + term
        self.engine.backward(total)
        self.engine.step()
        return total.detach()

    def _flush(self, pending: list, totals: dict[str, Any], progress, epoch_start: float,
               clips_at_start: int) -> None:
        """Read the pending losses (one all-reduce, one synchronisation), check them, log them."""
        if not pending:
            return
        dist = self.dist
        losses = torch.stack([loss.float() for _, loss in pending])
        if dist.world_size > 1:
            torch.distributed.all_reduce(losses)
            losses = losses / dist.world_size
        values = losses.tolist()
        for (row, _), value in zip(pending, values):
            if value != value or value in (float("inf"), float("-inf")):
                bad = "NaN" if value != value else value
                raise TrainingDiverged(
                    f"loss became {bad} at epoch {row['epoch']}, step {row['step']} (global step {row['global_step']}); "
                    f"stopped. {self._last_good_for(row['global_step'])} Lower solver.lr, enable "
                    "solver.clip_gradient, or check the data.")
        if self.unconfirmed and self.last_saved_step is not None and pending[-1][0]["global_step"] > self.last_saved_step:
            self._confirm_checkpoint()
            self.unconfirmed = False
        totals["loss_sum"] += sum(values)
        totals["loss_count"] += len(values)
        rows = [dict(row, loss=value) for (row, _), value in zip(pending, values)]
        if dist.is_main:
            append_jsonl_rows(self.steps_path, rows)
            last = rows[-1]
            self.tb.scalars(last["global_step"], **{"train/loss": last["loss"], "train/lr": last["lr"]})
        if progress is not None:
            speed = (totals["clips"] - clips_at_start) / max(time.time() - epoch_start, 1e-9)
            postfix = {"loss": f"{rows[-1]['loss']:.4f}", "lr": f"{rows[-1]['lr']:.2e}", "clips/s": f"{speed:.1f}"}
            if dist.device.type == "cuda":
                postfix["mem"] = f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f}G"
            progress.set_postfix(postfix, refresh=False)

    def _last_good_for(self, bad_step: int) -> str:
        # The checkpoint written right before the first bad step produced that loss: it is not good.
        self.unconfirmed = self.unconfirmed and self.last_saved_step is not None and self.last_saved_step >= bad_step - 1
        return self._last_good()

    def _check_bad_samples(self, tracker, epoch: int) -> None:
        """Merge the epoch's unreadable-input counts over processes, report them, stop if there are too many."""
        from ..data import BadSampleTracker
        num_errors, num_samples = all_reduce_sum([tracker.num_errors, tracker.num_samples], self.dist.device)
        errors = [tuple(e) for part in all_gather_objects(tracker.errors[:100]) for e in part]
        merged = BadSampleTracker(num_samples=int(num_samples), num_errors=int(num_errors), errors=errors)
        if merged.num_errors:
            self.log.warning(f"epoch {epoch}: {merged.summary()}")
        merged.check(float(self.cfg.data.max_bad_fraction))

    def validation_model(self) -> nn.Module:
        """The model validated: a plugin's (e.g. the EMA copy) if one provides it, else the trained model."""
        return validation_model(self.model, self.plugins)

    def _end_epoch(self, epoch: int, totals: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        logging_cfg = cfg.logging
        last = epoch + 1 == int(cfg.solver.epochs)
        validate = last or ((epoch + 1) % int(logging_cfg.eval_freq) == 0 and epoch not in list(logging_cfg.skip_epoch))
        train_loss = totals["loss_sum"] / max(totals["loss_count"], 1)
        clips_per_s = self.epoch_clips / max(self.epoch_time, 1e-9)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": self.engine.get_lr()[0],
                               "clips_per_s": clips_per_s, "epoch_time_s": self.epoch_time,
                               # the share of the epoch spent waiting for the data loader (0: the device was fed)
                               "data_wait_fraction": self.data_wait / max(self.epoch_time, 1e-9),
                               "val_top1": None, "val_top5": None}
        if validate:
            scores = collect_scores(self.backbone, self.validation_model(), self.val_loader, self.dist.device,
                                    mean=cfg.data.mean, std=cfg.data.std, precision=cfg.solver.precision,
                                    progress=self.dist.is_main and logging_cfg.progress, desc=f"val {epoch}",
                                    assembler=self.assembler)
            metrics = scores.metrics(cfg.data.num_classes)
            row.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_mean_class_acc=metrics["mean_class_acc"],
                       val_unreadable=len(scores.unreadable))
            if self.dist.is_main:
                save_confusion(metrics["confusion"], self.val_set.class_names, self.output_dir, "val_confusion")
        if self.dist.is_main:
            append_jsonl(self.metrics_path, row)
            self.tb.scalars(epoch, **{"val/top1": row["val_top1"], "val/top5": row["val_top5"],
                                      "epoch/train_loss": train_loss, "epoch/clips_per_s": clips_per_s})
            val = f"val top-1 {row['val_top1']:.2f}  top-5 {row['val_top5']:.2f}" if validate else "no validation"
            self.log.info(f"epoch {epoch}: train loss {train_loss:.4f}  {val}  ({clips_per_s:.1f} clips/s, "
                          f"{self.epoch_time:.0f} s)")
        return row

