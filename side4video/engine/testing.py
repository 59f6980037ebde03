"""``test.py``: multi-view testing of a checkpoint, with results a paper table and a fusion script can use.

The results folder is named by everything that changes the result: the weights, the protocol (frames × crops ×
clips), dense sampling, the view averaging, and — when they differ from the config the checkpoint was trained with —
the test list, its root and the sampling settings (a short hash of them). So a second test never replaces the
first; ``results.json`` records all of it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..backbones import backbone_identity
from ..data import ShardedEvalSampler, collate_eval, create_dataset, create_loader, resolve_protocol
from ..errors import DataError
from ..files import atomic_write_text
from ..models import create_assembler
from ..tasks import ScoreSet, create_task
from .builders import backbone_from_config, load_trainable_weights, model_from_config
from .checkpoint import FORMATS
from .distributed import setup_distributed
from .logging_utils import dump_json, setup_logging

# data keys whose value changes which frames and pixels a test scores (besides what the protocol name says)
DATA_IDENTITY_KEYS = ("val_list", "val_root", "dataset", "sampling_protocol", "sampling", "dense_range", "dense_window",
                      "sampling_rate", "three_crop", "scale_size", "input_size", "image_tmpl", "video_backend")


def data_identity(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What of a data section a test's result depends on (paths made absolute, the protocol resolved)."""
    out = {key: data_cfg.get(key) for key in DATA_IDENTITY_KEYS}
    for key in ("val_list", "val_root"):
        if out[key]:
            out[key] = os.path.abspath(str(out[key]))
    if out.get("sampling_protocol"):
        out["sampling_protocol"] = resolve_protocol(str(out["sampling_protocol"]), str(out.get("dataset") or ""))
    return out


def data_key(data_cfg: Mapping[str, Any], trained_with: Mapping[str, Any] | None) -> str | None:
    """None when the test reads the data the checkpoint was validated on (or the checkpoint does not say), else a
    short hash of the data settings."""
    now = data_identity(data_cfg)
    if not trained_with or data_identity(trained_with) == now:
        return None
    return hashlib.sha256(json.dumps(now, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_test_dir(weights: str | Path, protocol: str, *, dense: bool = False, average: str = "prob",
                     data: str | None = None) -> Path:
    """``<run>/test_<weights stem>_<protocol>[_dense][_logit][_<data hash>]``: everything that changes the result is
    in the name, so a second test with other weights, options or data never replaces the first."""
    weights = Path(weights)
    run_dir = weights.parent.parent if weights.parent.name == "checkpoints" else weights.parent
    name = f"test_{weights.stem}_{protocol}" + ("_dense" if dense else "") + ("_logit" if average == "logit" else "")
    return run_dir / (name + (f"_{data}" if data else ""))


def save_scores(path: str | Path, scores: ScoreSet, class_names: list[str], protocol: str,
                average: str = "prob") -> None:
    """Per-video scores for later fusion: ``scores [N, C]``, ``labels``, ``video_ids``, ``indices``, and how the
    views were averaged (``score_average``: prob | logit), so that fusion never mixes the two."""
    np.savez_compressed(path, scores=scores.scores.astype(np.float32), labels=scores.labels, indices=scores.indices,
                        video_ids=np.array(scores.video_ids), class_names=np.array(class_names),
                        protocol=np.array(protocol), score_average=np.array(average))


def run_test(cfg, weights: str | Path, *, test_crops: int | None = None, test_clips: int | None = None,
             dense: bool = False, batch_size: int | None = None, max_views: int = 64, average: str = "prob",
             output: str | Path | None = None, allow_other_backbone: bool = False,
             trained_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Test ``weights`` with the config ``cfg``; ``trained_config``: the config the checkpoint stores (its data
    section decides whether the folder name needs a data hash)."""
    dist = setup_distributed()
    task = create_task(cfg)
    datasets = task.build_datasets(cfg, cfg.seed)
    if datasets is not None:    # a task with data of its own kind (retrieval): its videos and captions, one view
        return _run_task_test(cfg, weights, task, datasets[1], datasets[3], dist, batch_size=batch_size,
                              output=output, allow_other_backbone=allow_other_backbone,
                              trained_config=trained_config)
    crops = int(test_crops or cfg.data.test_crops)
    clips = int(test_clips or cfg.data.test_clips)
    assembler = create_assembler(cfg.network.assembler)
    # built before the output folder exists: a protocol the sampler cannot give leaves nothing behind
    dataset = create_dataset(cfg.data, "test", test_crops=crops, test_clips=clips, dense=dense or None, seed=cfg.seed,
                             sampler=assembler.frame_sampler(cfg.data))
    frames, protocol = assembler.test_protocol(cfg.data, crops, clips)   # e.g. 8x3x2, cluster8x3x1
    trained_data = (trained_config or {}).get("data")
    out_dir = Path(output) if output else default_test_dir(weights, protocol, dense=dense, average=average,
                                                           data=data_key(cfg.data, trained_data))
    backbone, model, checkpoint, log, loader = _prepare_test(
        cfg, weights, dist, out_dir, dataset, assembler.collate_fn(False) or collate_eval, batch_size=batch_size,
        allow_other_backbone=allow_other_backbone)
    log.info(f"testing {weights} on {len(dataset)} videos, protocol {protocol} (frames x crops x clips), "
             f"{dist.world_size} process(es)")
    start = time.time()
    evaluation = task.evaluate(backbone, model, loader, device=dist.device, mean=cfg.data.mean, std=cfg.data.std,
                               assembler=assembler, precision=cfg.solver.precision, average=average,
                               max_views_per_forward=max_views, progress=dist.is_main and cfg.logging.progress,
                               desc=f"test {protocol}", flip_permutation=dataset.flip_permutation(),
                               progress_interval=float(cfg.logging.progress_interval))
    elapsed = time.time() - start
    scores: ScoreSet = evaluation.details["scores"]
    if len(scores.labels) == 0:
        listed = "; ".join(f"{bad['video_id']}: {bad['reason']}" for bad in scores.unreadable[:3])
        raise DataError(f"{cfg.data.val_list}: none of the {len(dataset)} videos could be read ({listed}"
                        f"{' ...' if len(scores.unreadable) > 3 else ''}); nothing was evaluated")
    identity = data_identity(cfg.data)
    repeated = scores.repeated_views()
    results = {
        **{k: v for k, v in evaluation.metrics.items() if k != "unreadable"},
        "protocol": protocol, "crops": crops, "clips": clips, "frames": frames,
        "sampling": "dense" if dense else cfg.data.sampling, "score_average": average,
        "data": {"list": identity["val_list"], "root": identity["val_root"],
                 "sampling_protocol": identity["sampling_protocol"],
                 "dense": bool(dense or cfg.data.sampling == "dense"), "dense_window": cfg.data.dense_window,
                 "dense_range": cfg.data.dense_range, "three_crop": cfg.data.three_crop,
                 "scale_size": cfg.data.scale_size, "input_size": cfg.data.input_size},
        "views": repeated,
        "out_of_order_videos": len(scores.out_of_order),
        "unreadable": scores.unreadable,
        "checkpoint": {"path": str(weights), "epoch": checkpoint.get("epoch"),
                       "format": checkpoint.get("format") if checkpoint.get("format") in FORMATS else "state_dict",
                       "backbone": backbone_identity(backbone), "head": cfg.network.head},
        "test_time_s": elapsed, "videos_per_s": len(scores.labels) / max(elapsed, 1e-9),
    }
    if checkpoint.get("other_backbone"):
        results["other_backbone"] = checkpoint["other_backbone"]   # allowed with --allow_other_backbone
    if dist.is_main:
        _warn_about_views(log, repeated, scores, cfg, dense)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "results.json", dump_json(results))
        save_scores(out_dir / "scores.npz", scores, dataset.class_names, protocol, average)
        task.write_evaluation(evaluation, out_dir, class_names=dataset.class_names)
        log.info(f"{protocol}: top-1 {results['top1']:.2f}  top-5 {results['top5']:.2f}  mean class "
                 f"{results['mean_class_acc']:.2f}  on {results['num_videos']} videos"
                 + (f"; {len(scores.unreadable)} unreadable, excluded (listed in results.json)"
                    if scores.unreadable else "") + f"  -> {out_dir}")
    return results


RETRIEVAL_IDENTITY_KEYS = ("dataset", "val_csv", "data_path", "features_path", "max_frames", "max_words",
                           "slice_framepos", "input_size", "image_tmpl", "video_backend")


def _prepare_test(cfg, weights: str | Path, dist, out_dir: Path, dataset, collate, *, batch_size: int | None,
                  allow_other_backbone: bool):
    """What every test run needs before it scores: the backbone and the model with the checkpoint's weights (loaded
    before ``out_dir`` exists, so a refused checkpoint leaves nothing behind; its log lines still reach
    ``test.log``), the log, and the evaluation loader sharded over processes."""
    backbone = backbone_from_config(cfg, dist.device)
    model = model_from_config(cfg, backbone)
    log = setup_logging(None, dist.is_main, keep_for_file=True)   # the conversion's lines go into test.log too
    checkpoint = load_trainable_weights(model, weights, backbone, cfg, allow_other_weights=allow_other_backbone,
                                        log=log)
    log = setup_logging(out_dir, dist.is_main, "test.log")
    model.to(dist.device).eval()
    loader = create_loader(dataset, batch_size=int(batch_size or cfg.data.batch_size),
                           sampler=ShardedEvalSampler(len(dataset), dist.world_size, dist.rank),
                           num_workers=int(cfg.data.workers), collate_fn=collate,
                           pin_memory=dist.device.type == "cuda", persistent_workers=False)
    return backbone, model, checkpoint, log, loader


def _run_task_test(cfg, weights: str | Path, task, dataset, collate, dist, *, batch_size: int | None,
                   output: str | Path | None, allow_other_backbone: bool,
                   trained_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """test.py for a task that reads its own data (retrieval): the task's evaluation over its evaluation set,
    ``results.json`` with its metrics and what was read, and the task's own files (retrieval: ``sims.npz``)."""
    identity = {key: cfg.data.get(key) for key in RETRIEVAL_IDENTITY_KEYS}
    trained = {key: (trained_config or {}).get("data", {}).get(key) for key in RETRIEVAL_IDENTITY_KEYS}
    changed = trained_config is not None and trained != identity
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    out_dir = Path(output) if output else default_test_dir(weights, task.name, data=digest if changed else None)
    backbone, model, checkpoint, log, loader = _prepare_test(cfg, weights, dist, out_dir, dataset, collate,
                                                             batch_size=batch_size,
                                                             allow_other_backbone=allow_other_backbone)
    log.info(f"testing {weights} ({task.name}) on {len(dataset)} videos, {dist.world_size} process(es)")
    start = time.time()
    evaluation = task.evaluate(backbone, model, loader, device=dist.device, mean=cfg.data.mean, std=cfg.data.std,
                               precision=cfg.solver.precision, progress=dist.is_main and cfg.logging.progress,
                               desc=f"test {task.name}", progress_interval=float(cfg.logging.progress_interval))
    elapsed = time.time() - start
    metrics = evaluation.metrics
    if metrics.get("unreadable") and metrics["unreadable"] == metrics.get("num_videos"):
        raise DataError(f"none of the {len(dataset)} videos could be read; nothing was evaluated")
    results = {
        "task": task.name, **{key: value for key, value in metrics.items()},
        **{key: value for key, value in evaluation.details.items() if key in ("text_to_video", "video_to_text")},
        "data": identity,
        "checkpoint": {"path": str(weights), "epoch": checkpoint.get("epoch"),
                       "format": checkpoint.get("format") if checkpoint.get("format") in FORMATS else "state_dict",
                       "backbone": backbone_identity(backbone)},
        "test_time_s": elapsed,
    }
    if checkpoint.get("other_backbone"):
        results["other_backbone"] = checkpoint["other_backbone"]
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "results.json", dump_json(results))
        task.write_evaluation(evaluation, out_dir)
        log.info(f"{task.describe(metrics)}  -> {out_dir}")
    return results


def _warn_about_views(log, repeated: Mapping[str, Any], scores: ScoreSet, cfg, dense: bool) -> None:
    """Say when the protocol's name promises more than was scored: views that coincide, frames out of order."""
    if repeated["videos_with_repeated_views"]:
        log.warning(f"{repeated['videos_with_repeated_views']} of {len(scores.video_ids)} videos had only "
                    f"{repeated['distinct_min']} distinct views of the {repeated['requested']} requested (e.g. "
                    f"{repeated['example']!r}: a video shorter than the clips' positions need, or frames barely "
                    "larger than the crop); repeated views weigh more in the average (results.json: views)")
    if scores.out_of_order:
        hint = (" (data.dense_window: adaptive keeps them in order)" if (dense or cfg.data.sampling == "dense")
                and cfg.data.dense_window == "reference" else "")
        log.warning(f"{len(scores.out_of_order)} videos are shorter than the dense window: the reference's rule wraps "
                    f"around (mod F) and takes their frames out of order, e.g. {scores.out_of_order[0]!r}{hint}")


__all__ = ["DATA_IDENTITY_KEYS", "data_identity", "data_key", "default_test_dir", "save_scores", "run_test"]
