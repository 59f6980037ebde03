"""What a resumed run may change: one policy for every key of the config.

* **Refused** (one line naming each changed key), unless the user says so with ``--allow_changes`` (recorded in the
  run): changes that alter the model or what a step means — the model layout (``network.*`` but the keys that only
  trade memory for time), the backbone's identity (its weights' SHA-256, not the file's path), the frames of a clip
  (``data.num_segments`` and the sampling keys), the input size, the task, the training plugins (they own state or
  the validated model) and the data (lists, roots, class count).
* **Continued with a warning** naming every one: the schedule — ``solver.epochs``, the learning-rate keys, and the
  global batch (``data.batch_size``, the number of processes, ``solver.grad_accumulation_steps``). The run goes on at
  the same position in samples, and the schedule is re-based on the new number of steps per epoch.
* Everything else (logging, workers, ...) continues silently; each resumed segment's config is kept
  (``config.resumed-<epoch>.yaml`` beside the first segment's ``config.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# Network keys that only trade memory for time: they never change what the model computes.
PERFORMANCE_ONLY = ("network.compile", "network.grad_checkpointing", "network.recompute", "network.pretrained_dir",
                    "network.pretrained")   # the weights' identity is compared by SHA-256 instead of by path
REFUSED_GROUPS: dict[str, tuple[str, ...]] = {
    "model": ("network.",),
    "frames": ("data.num_segments", "data.seg_length", "data.sampling", "data.sampling_protocol", "data.dense_range",
               "data.dense_window", "data.sampling_rate", "data.num_sample"),
    "input size": ("data.input_size", "data.scale_size"),
    "task": ("task",),
    "plugins": ("solver.plugins", "solver.mixup", "solver.cutmix"),
    "data": ("data.train_list", "data.train_root", "data.val_list", "data.val_root", "data.label_list",
             "data.num_classes", "data.dataset", "data.format"),
}
SCHEDULE_KEYS = ("solver.lr", "solver.epochs", "solver.lr_warmup_step", "solver.type", "solver.lr_steps",
                 "solver.lr_decay", "solver.min_lr", "data.batch_size", "solver.grad_accumulation_steps")


def flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    """Sections → dotted keys (``solver.lr``); values that are mappings themselves (``solver.lr_mult``,
    ``network.assembler``, ``task``) stay whole."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and key != "task":
            out.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            out[key] = value
    return out


def _group(key: str) -> str | None:
    if key in PERFORMANCE_ONLY:
        return None
    for name, prefixes in REFUSED_GROUPS.items():
        if any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes):
            return name
    return None


@dataclass
class ResumeChanges:
    """How the config of a resumed run differs from the checkpoint's."""
    refused: dict[str, tuple[Any, Any]] = field(default_factory=dict)      # key → (saved, now)
    schedule: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    other: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self, changes: Mapping[str, tuple[Any, Any]]) -> str:
        return ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())

    @property
    def any(self) -> bool:
        return bool(self.refused or self.schedule or self.other)


def compare(saved_config: Mapping[str, Any], config: Mapping[str, Any], *, saved_backbone: Mapping[str, Any] | None,
            backbone: Mapping[str, Any], saved_world_size: int, world_size: int) -> ResumeChanges:
    """The changes between a checkpoint's config (and its backbone identity, its number of processes) and now."""
    before, after = flatten(saved_config), flatten(config)
    changes = ResumeChanges()
    for key in sorted(set(before) | set(after)):
        if key in ("config_path", "resume", "output", "pretrain", "solver.start_epoch"):
            continue
        if key not in before:       # a key this version added: its default applies
            continue
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if _group(key) is not None:
            changes.refused[key] = (old, new)
        elif key in SCHEDULE_KEYS:
            changes.schedule[key] = (old, new)
        else:
            changes.other[key] = (old, new)
    if saved_backbone and saved_backbone.get("sha256") != backbone.get("sha256"):
        changes.refused["network.pretrained (SHA-256)"] = (str(saved_backbone.get("sha256"))[:12],
                                                           str(backbone.get("sha256"))[:12])
    if saved_world_size != world_size:
        changes.schedule["processes"] = (saved_world_size, world_size)
    order = {key: index for index, key in enumerate(SCHEDULE_KEYS)}
    changes.schedule = dict(sorted(changes.schedule.items(), key=lambda item: order.get(item[0], len(order))))
    return changes


@dataclass(frozen=True)
class Rebased:
    """Where a resumed run continues when the global batch changed: the epoch's micro-batches to skip and the
    optimizer step the schedule continues at, with the sentence that says so."""
    skip_batches: int
    optimizer_step: int
    note: str


def rebase_position(*, epoch: int, step_in_epoch: int, old_global_batch: int, new_global_batch: int,
                    old_accumulation: int, new_accumulation: int, new_batches_per_epoch: int,
                    videos_per_epoch: int) -> Rebased:
    """The same position in samples under another global batch (videos per micro-batch over all processes) or
    accumulation: the samples of the epoch already seen are skipped, rounded down to a whole optimizer step of the
    new run (the few samples in between are seen again)."""
    seen = step_in_epoch * old_global_batch
    skip = min(seen // new_global_batch, new_batches_per_epoch)
    skip -= skip % new_accumulation
    steps_per_epoch = new_batches_per_epoch // new_accumulation
    optimizer_step = epoch * steps_per_epoch + skip // new_accumulation
    repeated = seen - skip * new_global_batch
    note = (f"the run continues at epoch {epoch}, sample {skip * new_global_batch} of {videos_per_epoch} "
            f"({seen} were seen before the change; {repeated} are seen again), the schedule at optimizer step "
            f"{optimizer_step} of {steps_per_epoch} per epoch")
    return Rebased(skip_batches=skip, optimizer_step=optimizer_step, note=note)


__all__ = ["PERFORMANCE_ONLY", "REFUSED_GROUPS", "SCHEDULE_KEYS", "ResumeChanges", "compare", "Rebased",
           "rebase_position", "flatten"]
