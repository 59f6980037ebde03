"""Training with DeepSpeed on one CPU, one GPU or many nodes.

Only the trainable model (side network or head) and the plugins' trainable parts are handed to DeepSpeed: no
frozen backbone tensor is in any optimizer group, ZeRO partition or checkpoint. Every run, CPU included, goes
through the same path. The loop is short: each micro-batch is :func:`~side4video.engine.step.train_step`; the
task (``tasks/``) says what the targets, the loss and the validation metrics are; extras are training plugins.

No host–device synchronisation happens inside a step: losses stay on the device and are read (all-reduced,
checked for finiteness, logged) every ``logging.print_freq`` steps, before checkpoints and at epoch ends.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import IterableDataset

from ..backbones import backbone_identity
from ..config import dump_config, to_plain_dict
from ..data import (
    BadSampleTracker,
    ShardedEvalSampler,
    TrainSampler,
    collate_eval,
    collate_train,
    create_dataset,
    create_loader,
    loader_options,
)
from ..errors import CheckpointError, DataError, Side4VideoError, TrainingError
from ..files import OutputInUse, OutputLock
from ..models import count_parameters, create_assembler
from ..plugins import PluginContext, create_plugins, set_up_plugins, validation_model
from ..tasks import create_task
from .backends import DeepSpeedBackend
from .builders import backbone_from_config, check_fits, load_trainable_weights, model_from_config
from .checkpoint import (
    capture_rng_state,
    check_backbone_identity,
    create_checkpoint,
    is_training_checkpoint,
    load_checkpoint,
    restore_rng_state,
    restore_weights,
    weights_state,
)
from .distributed import DistInfo, all_gather_objects, all_reduce_sum, average_buffers, barrier, setup_distributed
from .logging_utils import (
    TensorBoard,
    append_jsonl,
    append_jsonl_rows,
    plot_curves,
    progress_bar,
    rewrite_jsonl,
    setup_logging,
)
from .optim import create_optimizer, create_scheduler
from .resume import Rebased, compare, rebase_position
from .signals import StopRequest, TrainingInterrupted
from .state import CheckpointKeeper, TrainState
from .step import StepParts, make_batch, train_step


class TrainingDiverged(TrainingError):
    """The loss or the weights became NaN/inf; the last good checkpoint is kept."""


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


class Trainer:
    """``Trainer(cfg, output_dir).fit()`` trains, validates every ``logging.eval_freq`` epochs and checkpoints.

    ``plugins`` adds plugin objects to those the config lists (tests inject fault hooks this way);
    ``allow_changes`` lets a resume go on with changes the resume policy refuses (``engine/resume.py``).
    """

    def __init__(self, cfg, output_dir: str | Path | None = None, plugins: list | None = None, *,
                 allow_changes: bool = False):
        self.cfg = cfg
        self.output_dir = Path(output_dir or cfg.output or default_output_dir(cfg))
        self.allow_changes = allow_changes
        self.dist: DistInfo = setup_distributed()
        self.lock = OutputLock(self.output_dir)
        if self.dist.is_main:
            self.lock.acquire()
        self.log = setup_logging(self.output_dir, self.dist.is_main)
        self.keeper = CheckpointKeeper(self.output_dir / "checkpoints", writer=self.dist.is_main)
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.steps_path = self.output_dir / "steps.jsonl"
        self.extra_plugins = list(plugins or [])
        self.state = TrainState()
        self.stop = StopRequest()

    # -- set-up ---------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, dist = self.cfg, self.dist
        for stale in self.keeper.clean_stale():
            self.log.info(f"removed {stale}, left by a checkpoint write that was killed")
        self.backbone = backbone_from_config(cfg, dist.device)
        self.identity = backbone_identity(self.backbone)
        self.assembler = create_assembler(cfg.network.assembler)
        self.task = create_task(cfg)
        model = model_from_config(cfg, self.backbone, seed=cfg.seed)
        # Python's and NumPy's global generators (timm's mixup draws from NumPy) start from the seed too, per rank
        # (checkpoints save and restore them with torch's, so a resumed run continues the same draws)
        random.seed(cfg.seed + dist.rank)
        np.random.seed(cfg.seed + dist.rank)
        if cfg.pretrain:
            load_trainable_weights(model, cfg.pretrain, self.backbone, cfg, allow_other_weights=True, log=self.log)
            self.log.info(f"loaded trainable weights from {cfg.pretrain}")
        model.to(dist.device)
        self.trainable_params = count_parameters(model)

        datasets = self.task.build_datasets(cfg, cfg.seed)   # a task with data of its own kind (retrieval)
        if datasets is None:
            frame_sampler = self.assembler.frame_sampler(cfg.data)
            self.train_set = create_dataset(cfg.data, "train", seed=cfg.seed, sampler=frame_sampler)
            self.val_set = create_dataset(cfg.data, "val", seed=cfg.seed, sampler=frame_sampler)
            train_collate = self.assembler.collate_fn(True) or collate_train
            val_collate = self.assembler.collate_fn(False) or collate_eval
        else:
            self.train_set, self.val_set, train_collate, val_collate = datasets
        # a stream (data.format: webdataset) orders itself and splits itself over processes and workers
        self.sampler = None if isinstance(self.train_set, IterableDataset) else TrainSampler(
            len(self.train_set), num_replicas=dist.world_size, rank=dist.rank, seed=cfg.seed, shuffle=True,
            drop_last=True)
        options = loader_options(cfg.data, device_type=dist.device.type)
        self.loader = create_loader(self.train_set, batch_size=cfg.data.batch_size, sampler=self.sampler,
                                   collate_fn=train_collate, drop_last=True,
                                   **options)
        self.val_loader = create_loader(self.val_set, batch_size=cfg.data.batch_size,
                                       sampler=ShardedEvalSampler(len(self.val_set), dist.world_size, dist.rank),
                                       collate_fn=val_collate, **options)
        self.accumulation = int(cfg.solver.grad_accumulation_steps)
        batches = len(self.train_set) // (cfg.data.batch_size * dist.world_size)
        # An epoch ends on an accumulation boundary, so epoch-end checkpoints never split an optimizer step.
        self.batches_per_epoch = batches // self.accumulation * self.accumulation
        if self.batches_per_epoch == 0:
            raise DataError(f"{cfg.data.train_list}: {len(self.train_set)} videos are fewer than one optimizer step "
                            f"({cfg.data.batch_size} x {dist.world_size} processes x {self.accumulation} "
                            "accumulation)")
        self.steps_per_epoch = self.batches_per_epoch // self.accumulation

        self.plugins = create_plugins(cfg) + self.extra_plugins
        context = PluginContext(cfg=cfg, model=model, backbone=self.backbone, assembler=self.assembler,
                                num_classes=int(cfg.data.num_classes or 0), device=dist.device, task=self.task)
        trainable, lr_mult = set_up_plugins(self.plugins, context, cfg.solver.lr_mult)
        if cfg.network.compile:
            model.compile()
        optimizer = create_optimizer(trainable, cfg.solver, lr_mult=lr_mult, prefix="model.")
        scheduler = create_scheduler(optimizer, cfg.solver, self.steps_per_epoch)
        micro_batch = cfg.data.batch_size * cfg.data.num_sample
        self.backend = DeepSpeedBackend(trainable, optimizer, scheduler,
                                        deepspeed_config(cfg, micro_batch, dist.world_size))
        self.parts = StepParts(backbone=self.backbone, model=self.model, task=self.task, assembler=self.assembler,
                               plugins=self.plugins)
        self.tb = TensorBoard(self.output_dir / "tb", cfg.logging.tensorboard and dist.is_main)

    @property
    def engine(self):
        """DeepSpeed's engine (its ``module`` holds the model and the plugins' trainable parts)."""
        return self.backend.engine

    @property
    def model(self) -> nn.Module:
        return self.backend.module.model

    def validation_model(self) -> nn.Module:
        """The model validated: a plugin's (e.g. the EMA copy) if one provides it, else the trained model."""
        return validation_model(self.model, self.plugins)

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _save(self, metrics: dict | None = None) -> None:
        """All processes call this (BatchNorm statistics averaged, optimizer partitions and RNG states gathered);
        the main process writes ``last.pt``. Weights that are no longer finite are never written."""
        finite = all(torch.isfinite(p).all() for p in self.backend.module.parameters())
        if all_reduce_sum([float(not finite)], self.dist.device)[0]:
            raise TrainingDiverged(f"weights became non-finite at epoch {self.state.epoch}, global step "
                                   f"{self.state.global_step}; stopped. {self._last_good()} "
                                   "Lower solver.lr or enable solver.clip_gradient.")
        self._synchronise_buffers()
        zero = self.backend.zero
        optimizer_states = all_gather_objects(self.backend.optimizer_state()) if zero else \
            [self.backend.optimizer_state()]
        rng_states = all_gather_objects(capture_rng_state())
        if self.dist.is_main:
            checkpoint = create_checkpoint(
                position=self.state.position(), world_size=self.dist.world_size,
                zero_stage=int(self.cfg.solver.zero_stage),
                # eval_model: what validation scored (e.g. the EMA copy), so that test.py evaluates the weights
                # best.pt was chosen by
                weights=weights_state(self.model, self.validation_model(), self.backend.module.parts, self.plugins),
                optimizer=optimizer_states, scheduler=self.backend.scheduler_state(), rng=rng_states,
                counters=self.backend.counters(), backbone=self.identity, head=self.cfg.network.head,
                num_classes=int(self.cfg.data.num_classes or 0), config=to_plain_dict(self.cfg), metrics=metrics,
                monitor=self.task.monitor, resumes=self.resumes)
            failure: BaseException | None = None
            try:
                self.keeper.save_last(checkpoint, self.state.global_step)
            except (Side4VideoError, OSError) as exc:   # e.g. a full disk: the last good checkpoint stays in place
                failure = exc
            problems = all_gather_objects(None if failure is None else str(failure))
            if failure is not None:
                raise failure
        else:
            self.keeper.save_last({}, self.state.global_step)
            problems = all_gather_objects(None)
        if problems[0] is not None:         # every process stops with the main process's one line
            raise TrainingError(problems[0])
        barrier()

    def _synchronise_buffers(self) -> None:
        """Every process ends a step with the BatchNorm statistics of its own clips: make them the mean over the
        processes, so that what is validated and what is saved are one model (not rank 0's alone)."""
        if self.dist.world_size > 1:
            average_buffers(self.model)
            validated = self.validation_model()
            if validated is not self.model:
                average_buffers(validated)

    def _last_good(self) -> str:
        """Where the last good checkpoint is, for the divergence message (rolls last.pt back if needed)."""
        self.keeper.roll_back()
        barrier()
        last = self.keeper.last
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
            path, note = self.keeper.resumable()
            if note:
                self.log.warning(note)
            return path
        return Path(resume)

    def _restore(self, path: Path) -> dict[str, Any]:
        state = load_checkpoint(path)
        if not is_training_checkpoint(state):
            raise CheckpointError(f"{path} is not a side4video training checkpoint; use it as 'pretrain:' instead")
        check_backbone_identity(state, self.identity, path, allow_other_weights=True)   # the policy decides below
        changes = compare(state.get("config", {}), to_plain_dict(self.cfg), saved_backbone=state.get("backbone"),
                          backbone=self.identity, saved_world_size=int(state["world_size"]),
                          world_size=self.dist.world_size)
        if changes.refused and not self.allow_changes:
            raise CheckpointError(
                f"{path}: resuming with changes that alter the model or what a step means: "
                f"{changes.describe(changes.refused)}; resume with the checkpoint's settings, start a new run "
                "(another --output, or pretrain: to start from its weights), or pass --allow_changes to continue "
                "anyway (recorded in the run)")
        if state.get("zero_stage", 0) and state["world_size"] != self.dist.world_size:
            raise CheckpointError(f"{path} holds ZeRO optimizer partitions of {state['world_size']} processes; "
                                  f"resume it with the same number (now {self.dist.world_size})")
        check_fits(self.model, state["model"], state, path, self.cfg)
        restore_weights(state, self.model, self.validation_model(), self.backend.module.parts, self.plugins)
        try:
            self.backend.load_state(state["optimizer"], state["scheduler"], state.get("engine_counters"),
                                    rank=self.dist.rank)
        except ValueError as exc:   # e.g. "loaded state dict has a different number of parameter groups"
            raise CheckpointError(f"{path}: its optimizer state does not fit this run's parameter groups ({exc}); it "
                                  "was written with other plugins or solver.lr_mult, or by an older version. Start "
                                  "from its weights with pretrain: instead of resuming") from None
        self.state = TrainState.from_checkpoint(state)
        self.skip_batches = self.state.step_in_epoch
        self._continue_schedule(state, changes)
        rng = state["rng"]
        restore_rng_state(rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0])
        self.resumes = list(state.get("resumes", [])) + [{
            "epoch": self.state.epoch, "step_in_epoch": self.state.step_in_epoch, "from": str(path),
            "changed": {k: [v[0], v[1]] for k, v in {**changes.refused, **changes.schedule, **changes.other}.items()},
            "allowed_changes": bool(changes.refused)}]
        if changes.refused:
            self.log.warning(f"resuming with --allow_changes: {changes.describe(changes.refused)} (recorded in the "
                             "checkpoint and config.resumed-*.yaml)")
        if changes.other:
            self.log.info(f"resuming with other settings: {changes.describe(changes.other)}")
        self.log.info(f"resumed from {path}: epoch {self.state.epoch}, step {self.state.step_in_epoch} of that epoch")
        return state

    def _continue_schedule(self, state: dict[str, Any], changes) -> None:
        """The schedule continues from the restored position with the current solver settings (changes are
        named in one warning); a changed global batch re-bases the position and the schedule on the new steps
        per epoch, at the same position in samples."""
        saved = state.get("config", {})
        old_batch = int(saved.get("data", {}).get("batch_size", self.cfg.data.batch_size))
        old_accumulation = int(saved.get("solver", {}).get("grad_accumulation_steps", self.accumulation))
        old_global = old_batch * int(state["world_size"])
        new_global = int(self.cfg.data.batch_size) * self.dist.world_size
        rebased: Rebased | None = None
        if (old_global, old_accumulation) != (new_global, self.accumulation):
            rebased = rebase_position(epoch=self.state.epoch, step_in_epoch=self.state.step_in_epoch,
                                      old_global_batch=old_global, new_global_batch=new_global,
                                      old_accumulation=old_accumulation, new_accumulation=self.accumulation,
                                      new_batches_per_epoch=self.batches_per_epoch,
                                      videos_per_epoch=len(self.train_set))
            self.skip_batches = rebased.skip_batches
            self.state.step_in_epoch = rebased.skip_batches
            step = rebased.optimizer_step
            samples = int(self.cfg.data.batch_size) * int(self.cfg.data.num_sample) * self.dist.world_size
            self.backend.set_optimizer_step(step, self.accumulation, samples)
        else:
            step = self.backend.optimizer_steps
        if changes.schedule:
            where = f"; {rebased.note}" if rebased else f"; the schedule continues from optimizer step {step}"
            self.log.warning(f"resuming with a changed schedule ({changes.describe(changes.schedule)}){where}")
        self.backend.rebase_schedule(self.cfg.solver, self.steps_per_epoch, step)

    # -- the loop -------------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        try:
            with self.stop:
                return self._fit()
        finally:
            self.lock.release()

    def _fit(self) -> dict[str, Any]:
        self._build()
        cfg, dist = self.cfg, self.dist
        self.state = TrainState(epoch=int(cfg.solver.start_epoch))
        self.skip_batches = 0
        self.resumes: list[dict[str, Any]] = []
        resume_path = self._resume_path()
        if resume_path is not None:
            self._restore(resume_path)
            self.keeper.last_saved_step = self.state.global_step
            if dist.is_main:     # drop what the resumed run replays
                done = self.state.global_step
                rewrite_jsonl(self.steps_path, lambda row: row["global_step"] <= done)
                rewrite_jsonl(self.metrics_path, lambda row: row["epoch"] < self.state.epoch)
        elif dist.is_main:
            for stale in (self.metrics_path, self.steps_path):
                stale.unlink(missing_ok=True)
        if dist.is_main:   # only once the run has really started (a failed resume leaves the old config)
            name = "config.yaml" if resume_path is None else f"config.resumed-{self.state.epoch}.yaml"
            dump_config(cfg, self.output_dir / name)
        self.log.info(f"{cfg.network.head} on frozen {self.backbone.info.arch}: {self.trainable_params:,} trainable "
                      f"parameters; {len(self.train_set)} train / {len(self.val_set)} val videos; "
                      f"{dist.world_size} process(es) on {dist.device.type}; output {self.output_dir}")
        summary: dict[str, Any] = {}
        train_start = time.time()
        self.stop.deferred = True
        for epoch in range(self.state.epoch, int(cfg.solver.epochs)):
            if epoch != self.state.epoch:
                self.state.start_epoch(epoch)
            self._train_epoch(epoch, self.skip_batches)
            self.skip_batches = 0
            row = self._end_epoch(epoch)
            improved = self.state.improves(row.get(f"val_{self.task.monitor}"))
            if improved:
                self.state.best_metric = row[f"val_{self.task.monitor}"]
            self.state.start_epoch(epoch + 1)
            self._save(row)
            if improved:
                self.keeper.promote_best()
            barrier()
            summary = row
            self._stop_if_asked()
        self.keeper.confirm()
        best = self.state.best
        summary = dict(summary, best_val_top1=best, best_val=best, monitor=self.task.monitor,
                       train_time_s=time.time() - train_start, trainable_params=self.trainable_params,
                       output_dir=str(self.output_dir))
        if dist.is_main:
            (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            if self.metrics_path.is_file():
                plot_curves(self.metrics_path, self.output_dir / "curves.png")
            monitor = {"top1": "top-1"}.get(self.task.monitor, self.task.monitor)
            text = f"best val {monitor} {best:.2f}%" if best is not None else "no validation"
            self.log.info(f"finished: {text}; outputs in {self.output_dir} "
                          "(checkpoints/best.pt, checkpoints/last.pt, metrics.jsonl, curves.png, tb/)")
        self.tb.close()
        return summary

    def _stop_if_asked(self) -> None:
        """At a step boundary: if any process got SIGINT/SIGTERM, write the position and stop (all processes)."""
        signum = self.stop.agreed()
        if signum is None:
            return
        if self.keeper.last_saved_step != self.state.global_step or not self.keeper.last.is_file():
            self._flush_pending()
            self._save()
        self.keeper.confirm()
        raise TrainingInterrupted(
            f"stopped by {self.stop.name} at epoch {self.state.epoch}, step {self.state.step_in_epoch} (global step "
            f"{self.state.global_step}); saved {self.keeper.last}; resume with: python train.py --config "
            f"{self.cfg.config_path} --output {self.output_dir} --resume auto", signum)

    def _train_epoch(self, epoch: int, skip_batches: int) -> None:
        cfg, dist = self.cfg, self.dist
        self.train_set.set_epoch(epoch)
        order = self.train_set if self.sampler is None else self.sampler     # a stream keeps its own position
        order.set_epoch(epoch)
        order.set_start(skip_batches * cfg.data.batch_size)
        self.backend.train()
        tracker = BadSampleTracker()
        save_every = int(cfg.logging.save_freq_steps or 0)
        print_every = int(cfg.logging.print_freq)
        self.pending: list[tuple[dict[str, Any], torch.Tensor]] = []   # steps whose loss is still on the device
        self.epoch_start, self.clips_at_start = time.time(), self.state.epoch_totals["clips"]
        self.progress = None
        if dist.is_main and cfg.logging.progress:
            self.progress = progress_bar(interval=cfg.logging.progress_interval, total=self.batches_per_epoch,
                                         initial=skip_batches, desc=f"epoch {epoch}", leave=False)
        batches = iter(self.loader)
        self.data_wait = 0.0
        for batch_index in range(skip_batches, self.batches_per_epoch):
            waited = time.perf_counter()
            raw = next(batches)
            self.data_wait += time.perf_counter() - waited
            tracker.add(raw["errors"], raw["num_samples"])
            lr = self.backend.lr()           # the rate this step uses (the scheduler advances in step())
            batch = make_batch(raw, self.task, dist.device, cfg.data.mean, cfg.data.std)
            loss = train_step(self.parts, batch, self.backend)
            self.state.global_step += 1
            self.state.step_in_epoch = batch_index + 1
            self.state.epoch_totals["clips"] += raw["num_samples"] * dist.world_size
            self.pending.append(({"epoch": epoch, "step": batch_index, "global_step": self.state.global_step,
                                  "lr": lr}, loss))
            at_boundary = (batch_index + 1) % self.accumulation == 0
            last_batch = batch_index + 1 == self.batches_per_epoch
            want_save = (save_every and at_boundary and self.state.global_step % save_every == 0
                         and not last_batch)
            if len(self.pending) >= print_every or want_save or last_batch:
                self._flush_pending()
            if want_save:
                self._save()
            if self.progress is not None:
                self.progress.update(1)
            if at_boundary and not last_batch:
                self._stop_if_asked()
        if self.progress is not None:
            self.progress.close()
        self.epoch_time = time.time() - self.epoch_start
        self.epoch_clips = self.state.epoch_totals["clips"] - self.clips_at_start
        self._check_bad_samples(tracker, epoch)

    def _flush_pending(self) -> None:
        """Read the pending losses (one all-reduce, one synchronisation), check them, log them."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        dist, totals = self.dist, self.state.epoch_totals
        losses = torch.stack([loss.float() for _, loss in pending])
        if dist.world_size > 1:
            torch.distributed.all_reduce(losses)
            losses = losses / dist.world_size
        values = losses.tolist()
        for (row, _), value in zip(pending, values):
            if value != value or value in (float("inf"), float("-inf")):
                bad = "NaN" if value != value else value
                raise TrainingDiverged(
                    f"loss became {bad} at epoch {row['epoch']}, step {row['step']} "
                    f"(global step {row['global_step']}); "
                    f"stopped. {self._last_good_for(row['global_step'])} Lower solver.lr, enable "
                    "solver.clip_gradient, or check the data.")
        saved = self.keeper.last_saved_step
        if self.keeper.unconfirmed and saved is not None and pending[-1][0]["global_step"] > saved:
            self.keeper.confirm()
        totals["loss_sum"] += sum(values)
        totals["loss_count"] += len(values)
        rows = [dict(row, loss=value) for (row, _), value in zip(pending, values)]
        if dist.is_main:
            append_jsonl_rows(self.steps_path, rows)
            last = rows[-1]
            self.tb.scalars(last["global_step"], **{"train/loss": last["loss"], "train/lr": last["lr"]})
        if self.progress is not None:
            speed = (totals["clips"] - self.clips_at_start) / max(time.time() - self.epoch_start, 1e-9)
            postfix = {"loss": f"{rows[-1]['loss']:.4f}", "lr": f"{rows[-1]['lr']:.2e}", "clips/s": f"{speed:.1f}"}
            if dist.device.type == "cuda":
                postfix["mem"] = f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f}G"
            self.progress.set_postfix(postfix, refresh=False)

    def _last_good_for(self, bad_step: int) -> str:
        # The checkpoint written right before the first bad step produced that loss: it is not good.
        saved = self.keeper.last_saved_step
        self.keeper.unconfirmed = self.keeper.unconfirmed and saved is not None and saved >= bad_step - 1
        return self._last_good()

    def _check_bad_samples(self, tracker: BadSampleTracker, epoch: int) -> None:
        """Merge the epoch's unreadable-input counts over processes, report them, stop if there are too many."""
        num_errors, num_samples = all_reduce_sum([tracker.num_errors, tracker.num_samples], self.dist.device)
        errors = [tuple(e) for part in all_gather_objects(tracker.errors[:100]) for e in part]
        merged = BadSampleTracker(num_samples=int(num_samples), num_errors=int(num_errors), errors=errors)
        if merged.num_errors:
            self.log.warning(f"epoch {epoch}: {merged.summary()}")
        merged.check(float(self.cfg.data.max_bad_fraction))

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.cfg
        logging_cfg = cfg.logging
        totals = self.state.epoch_totals
        last = epoch + 1 == int(cfg.solver.epochs)
        validate = last or ((epoch + 1) % int(logging_cfg.eval_freq) == 0 and epoch not in list(logging_cfg.skip_epoch))
        train_loss = totals["loss_sum"] / max(totals["loss_count"], 1)
        clips_per_s = self.epoch_clips / max(self.epoch_time, 1e-9)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": self.backend.lr(),
                               "clips_per_s": clips_per_s, "epoch_time_s": self.epoch_time,
                               # the share of the epoch spent waiting for the data loader (0: the device was fed)
                               "data_wait_fraction": self.data_wait / max(self.epoch_time, 1e-9),
                               "val_top1": None, "val_top5": None}
        if validate:
            self._synchronise_buffers()
            evaluation = self.task.evaluate(
                self.backbone, self.validation_model(), self.val_loader, device=self.dist.device,
                mean=cfg.data.mean, std=cfg.data.std, assembler=self.assembler, precision=cfg.solver.precision,
                progress=self.dist.is_main and logging_cfg.progress, desc=f"val {epoch}")
            metrics = evaluation.metrics
            row.update({f"val_{key}": value for key, value in metrics.items()
                        if key not in ("num_videos", "num_views")})
            if self.dist.is_main:
                self.task.write_evaluation(evaluation, self.output_dir,
                                           class_names=getattr(self.val_set, "class_names", ()), prefix="val_")
        if self.dist.is_main:
            append_jsonl(self.metrics_path, row)
            self.tb.scalars(epoch, **{"val/top1": row["val_top1"], "val/top5": row["val_top5"],
                                      "epoch/train_loss": train_loss, "epoch/clips_per_s": clips_per_s})
            val = f"val {self.task.describe(evaluation.metrics)}" if validate else "no validation"
            self.log.info(f"epoch {epoch}: train loss {train_loss:.4f}  {val}  ({clips_per_s:.1f} clips/s, "
                          f"{self.epoch_time:.0f} s)")
        return row


__all__ = ["Trainer", "TrainingDiverged", "OutputInUse", "OutputLock", "deepspeed_config", "default_output_dir"]
