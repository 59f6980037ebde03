"""Training with DeepSpeed on one CPU, one GPU or many nodes.

Only the trainable model (side network or head) is handed to DeepSpeed: no frozen backbone tensor is in
any optimizer group, ZeRO partition or checkpoint. Every run, CPU included, goes through the same path.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..backbones import backbone_identity
from ..config import dump_config, to_plain_dict
from ..models import count_parameters
from .builders import backbone_from_config, load_trainable_weights, model_from_config
from .checkpoint import (FORMAT, atomic_copy, atomic_save, capture_rng_state, check_backbone_identity, load_checkpoint,
                         load_optimizer_state, optimizer_state, restore_rng_state)
from .distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier, setup_distributed
from .evaluator import autocast_context, collect_scores
from .logging_utils import TensorBoard, append_jsonl, progress_bar, setup_logging
from .metrics import plot_curves, save_confusion
from .optim import build_optimizer, build_scheduler

# Test hook: the process SIGKILLs itself right after this global step, as a crash would (no clean-up).
KILL_ENV = "SIDE4VIDEO_KILL_AT_STEP"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


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
        if solver.precision == "fp16" and int(solver.zero_stage) > 0:
            raise ValueError("solver.precision fp16 needs solver.zero_stage 0 (DeepSpeed's loss scaler for "
                             "torch autocast); use bf16 with ZeRO 1/2")
        # Autocast keeps fp32 master weights (like the reference's AMP) and leaves BatchNorm in fp32.
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16" if solver.precision == "bf16" else "float16"}
    return ds


class Trainer:
    """``Trainer(cfg, output_dir).fit()`` trains, validates every ``logging.eval_freq`` epochs and checkpoints."""

    def __init__(self, cfg, output_dir: str | Path | None = None):
        self.cfg = cfg
        self.output_dir = Path(output_dir or cfg.output or default_output_dir(cfg))
        self.dist: DistInfo = setup_distributed()
        self.log = setup_logging(self.output_dir, self.dist.is_main)
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.steps_path = self.output_dir / "steps.jsonl"

    # -- set-up ---------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        import deepspeed
        from ..data import (ShardedEvalSampler, TrainSampler, build_dataset, build_loader, collate_eval,
                            collate_train)
        cfg, dist = self.cfg, self.dist
        if dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.output_dir / "config.yaml")
        self.backbone = backbone_from_config(cfg, dist.device)
        self.identity = backbone_identity(self.backbone)
        model = model_from_config(cfg, self.backbone, seed=cfg.seed)
        if cfg.pretrain:
            load_trainable_weights(model, cfg.pretrain, self.backbone)
            self.log.info(f"loaded trainable weights from {cfg.pretrain}")
        model.to(dist.device)
        self.trainable_params = count_parameters(model)

        self.train_set = build_dataset(cfg.data, "train", seed=cfg.seed)
        self.val_set = build_dataset(cfg.data, "val", seed=cfg.seed)
        self.sampler = TrainSampler(len(self.train_set), num_replicas=dist.world_size, rank=dist.rank,
                                    seed=cfg.seed, shuffle=True, drop_last=True)
        workers = int(cfg.data.workers)
        self.loader = build_loader(self.train_set, batch_size=cfg.data.batch_size, sampler=self.sampler,
                                   num_workers=workers, collate_fn=collate_train,
                                   pin_memory=cfg.data.pin_memory and dist.device.type == "cuda",
                                   persistent_workers=workers > 0, drop_last=True)
        self.val_loader = build_loader(self.val_set, batch_size=cfg.data.batch_size,
                                       sampler=ShardedEvalSampler(len(self.val_set), dist.world_size, dist.rank),
                                       num_workers=workers, collate_fn=collate_eval,
                                       pin_memory=cfg.data.pin_memory and dist.device.type == "cuda",
                                       persistent_workers=workers > 0)
        self.batches_per_epoch = len(self.train_set) // (cfg.data.batch_size * dist.world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"{cfg.data.train_list}: {len(self.train_set)} videos are fewer than one global batch "
                             f"({cfg.data.batch_size} x {dist.world_size} processes)")
        accumulation = int(cfg.solver.grad_accumulation_steps)
        steps_per_epoch = max(self.batches_per_epoch // accumulation, 1)

        optimizer = build_optimizer(model, cfg.solver)
        scheduler = build_scheduler(optimizer, cfg.solver, steps_per_epoch)
        micro_batch = cfg.data.batch_size * cfg.data.num_sample
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=deepspeed_config(cfg, micro_batch, dist.world_size))
        self.mixup = self._build_mixup()
        self.tb = TensorBoard(self.output_dir / "tb", cfg.logging.tensorboard and dist.is_main)

    def _build_mixup(self):
        solver = self.cfg.solver
        if not (solver.mixup > 0 or solver.cutmix > 0):
            return None
        from timm.data import Mixup
        return Mixup(mixup_alpha=solver.mixup, cutmix_alpha=solver.cutmix, prob=solver.mix_prob,
                     switch_prob=solver.mix_switch_prob, label_smoothing=solver.smoothing,
                     num_classes=self.cfg.data.num_classes)

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _save(self, name: str, epoch: int, step_in_epoch: int, global_step: int, best_top1: float,
              metrics: dict | None = None) -> None:
        """All processes call this (optimizer partitions and RNG states are gathered); rank 0 writes.

        Weights that are no longer finite are never written: the previous checkpoint stays the last good one.
        """
        finite = all(torch.isfinite(p).all() for p in self.engine.module.parameters())
        if all_reduce_sum([float(not finite)], self.dist.device)[0]:
            raise TrainingDiverged(f"weights became non-finite at epoch {epoch}, global step {global_step}; stopped. "
                                   f"The last good checkpoint is {self.ckpt_dir / 'last.pt'}. "
                                   "Lower solver.lr or enable solver.clip_gradient.")
        zero = self.engine.zero_optimization()
        optimizer_states = all_gather_objects(optimizer_state(self.engine)) if zero else [optimizer_state(self.engine)]
        rng_states = all_gather_objects(capture_rng_state())
        if self.dist.is_main:
            state = {
                "format": FORMAT, "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "best_top1": best_top1, "world_size": self.dist.world_size, "zero_stage": int(self.cfg.solver.zero_stage),
                "model": {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                          for k, v in self.engine.module.state_dict().items()},
                "optimizer": optimizer_states, "scheduler": self.engine.lr_scheduler.state_dict(), "rng": rng_states,
                "backbone": self.identity, "head": self.cfg.network.head, "num_classes": self.cfg.data.num_classes,
                "config": _plain(to_plain_dict(self.cfg)), "metrics": metrics or {},
            }
            atomic_save(state, self.ckpt_dir / name)
        barrier()

    def _resume_path(self) -> Path | None:
        resume = self.cfg.resume
        if not resume:
            return None
        if str(resume) == "auto":
            path = self.ckpt_dir / "last.pt"
            return path if path.is_file() else None
        return Path(resume)

    def _restore(self, path: Path) -> tuple[int, int, int, float]:
        state = load_checkpoint(path)
        check_backbone_identity(state, self.identity, path)
        if state.get("zero_stage", 0) and state["world_size"] != self.dist.world_size:
            raise ValueError(f"{path} holds ZeRO optimizer partitions of {state['world_size']} processes; "
                             f"resume it with the same number (now {self.dist.world_size})")
        self.engine.module.load_state_dict(state["model"])
        load_optimizer_state(self.engine, state["optimizer"], min(self.dist.rank, len(state["optimizer"]) - 1))
        self.engine.lr_scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        restore_rng_state(rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0])
        self.log.info(f"resumed from {path}: epoch {state['epoch']}, step {state['step_in_epoch']} of that epoch")
        return state["epoch"], state["step_in_epoch"], state["global_step"], state["best_top1"]

    # -- the loop ---------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        from ..data import BadSampleTracker, normalize_frames
        self._build()
        cfg, dist, engine = self.cfg, self.dist, self.engine
        start_epoch, skip_batches, global_step, best_top1 = int(cfg.solver.start_epoch), 0, 0, -1.0
        resume_path = self._resume_path()
        if resume_path is not None:
            start_epoch, skip_batches, global_step, best_top1 = self._restore(resume_path)
        elif dist.is_main:
            for stale in (self.metrics_path, self.steps_path):
                stale.unlink(missing_ok=True)
        self.log.info(f"{cfg.network.head} on frozen {self.backbone.info.arch}: {self.trainable_params:,} trainable "
                      f"parameters; {len(self.train_set)} train / {len(self.val_set)} val videos; "
                      f"{dist.world_size} process(es) on {dist.device.type}; output {self.output_dir}")
        kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
        mean, std = cfg.data.mean, cfg.data.std
        save_every = int(cfg.logging.save_freq_steps or 0)
        accumulation = int(cfg.solver.grad_accumulation_steps)
        summary: dict[str, Any] = {}
        train_start = time.time()
        for epoch in range(start_epoch, int(cfg.solver.epochs)):
            self.train_set.set_epoch(epoch)
            self.sampler.set_epoch(epoch)
            self.sampler.set_start(skip_batches * cfg.data.batch_size)
            engine.train()
            tracker = BadSampleTracker()
            loss_sum, loss_count, clips, epoch_start = 0.0, 0, 0, time.time()
            batches = iter(self.loader)
            progress = None
            if dist.is_main and cfg.logging.progress:
                progress = progress_bar(total=self.batches_per_epoch, initial=skip_batches, desc=f"epoch {epoch}",
                                        leave=False)
            for batch_index in range(skip_batches, self.batches_per_epoch):
                batch = next(batches)
                tracker.add(batch["errors"], batch["num_samples"])
                frames = normalize_frames(batch["frames"].to(dist.device, non_blocking=True), mean, std)
                labels = batch["label"].to(dist.device, non_blocking=True)
                targets = labels
                if self.mixup is not None:
                    frames, targets = self.mixup(frames, labels)
                with autocast_context(dist.device, cfg.solver.precision):
                    taps = self.backbone.tap(frames, layers=engine.module.backbone_layers,
                                             embedding=engine.module.needs_embedding)
                logits = engine(frames, taps.tokens, taps.embedding)
                if targets.dim() == 2:
                    loss = F.cross_entropy(logits.float(), targets)
                else:
                    loss = F.cross_entropy(logits.float(), targets, label_smoothing=cfg.solver.smoothing)
                mean_loss, bad = all_reduce_sum([loss.item(), float(not math.isfinite(loss.item()))], dist.device)
                mean_loss /= dist.world_size
                if bad:
                    raise TrainingDiverged(
                        f"loss became {'NaN' if math.isnan(loss.item()) else loss.item()} at epoch {epoch}, step "
                        f"{batch_index} (global step {global_step}); stopped. The last good checkpoint is "
                        f"{self.ckpt_dir / 'last.pt'}. Lower solver.lr, enable solver.clip_gradient, or check the data.")
                lr = engine.get_lr()[0]          # the rate this step uses (the scheduler advances in step())
                engine.backward(loss)
                engine.step()
                global_step += 1
                loss_sum, loss_count = loss_sum + mean_loss, loss_count + 1
                clips += batch["num_samples"] * dist.world_size
                if dist.is_main:
                    append_jsonl(self.steps_path, {"epoch": epoch, "step": batch_index, "global_step": global_step,
                                                   "loss": mean_loss, "lr": lr})
                    if global_step % max(int(cfg.logging.print_freq), 1) == 0:
                        self.tb.scalars(global_step, **{"train/loss": mean_loss, "train/lr": lr})
                if progress is not None:
                    speed = clips / max(time.time() - epoch_start, 1e-9)
                    postfix = {"loss": f"{mean_loss:.4f}", "lr": f"{lr:.2e}", "clips/s": f"{speed:.1f}"}
                    if dist.device.type == "cuda":
                        postfix["mem"] = f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f}G"
                    progress.set_postfix(postfix)
                    progress.update(1)
                at_boundary = (batch_index + 1) % accumulation == 0
                if save_every and at_boundary and global_step % save_every == 0 \
                        and batch_index + 1 < self.batches_per_epoch:
                    self._save("last.pt", epoch, batch_index + 1, global_step, best_top1)
                if kill_at and global_step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            if progress is not None:
                progress.close()
            skip_batches = 0
            epoch_time = time.time() - epoch_start
            self._check_bad_samples(tracker, epoch)
            row = self._end_epoch(epoch, loss_sum / max(loss_count, 1), clips / max(epoch_time, 1e-9), epoch_time)
            improved = row.get("val_top1") is not None and row["val_top1"] > best_top1
            if improved:
                best_top1 = row["val_top1"]
            self._save("last.pt", epoch + 1, 0, global_step, best_top1, row)
            if improved and dist.is_main:
                atomic_copy(self.ckpt_dir / "last.pt", self.ckpt_dir / "best.pt")
            barrier()
            summary = row
        summary = dict(summary, best_val_top1=best_top1 if best_top1 >= 0 else None,
                       train_time_s=time.time() - train_start, trainable_params=self.trainable_params,
                       output_dir=str(self.output_dir))
        if dist.is_main:
            (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            if self.metrics_path.is_file():
                plot_curves(self.metrics_path, self.output_dir / "curves.png")
        self.tb.close()
        return summary

    def _check_bad_samples(self, tracker, epoch: int) -> None:
        """Merge the epoch's unreadable-input counts over processes, report them, stop if there are too many."""
        from ..data import BadSampleTracker
        num_errors, num_samples = all_reduce_sum([tracker.num_errors, tracker.num_samples], self.dist.device)
        errors = [tuple(e) for part in all_gather_objects(tracker.errors[:100]) for e in part]
        merged = BadSampleTracker(num_samples=int(num_samples), num_errors=int(num_errors), errors=errors)
        if merged.num_errors:
            self.log.warning(f"epoch {epoch}: {merged.summary()}")
        merged.check(float(self.cfg.data.max_bad_fraction))

    def _end_epoch(self, epoch: int, train_loss: float, clips_per_s: float, epoch_time: float) -> dict[str, Any]:
        cfg = self.cfg
        logging_cfg = cfg.logging
        last = epoch + 1 == int(cfg.solver.epochs)
        validate = last or ((epoch + 1) % max(int(logging_cfg.eval_freq), 1) == 0
                            and epoch not in list(logging_cfg.skip_epoch or []))
        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": self.engine.get_lr()[0],
                               "clips_per_s": clips_per_s, "epoch_time_s": epoch_time,
                               "val_top1": None, "val_top5": None}
        if validate:
            scores = collect_scores(self.backbone, self.engine.module, self.val_loader, self.dist.device,
                                    mean=cfg.data.mean, std=cfg.data.std, precision=cfg.solver.precision,
                                    progress=self.dist.is_main and logging_cfg.progress, desc=f"val {epoch}")
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
                          f"{epoch_time:.0f} s)")
        return row


def _plain(value: Any) -> Any:
    """Config values as plain containers (weights_only checkpoints accept nothing else)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
