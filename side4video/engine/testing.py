"""``test.py``: multi-view testing of a checkpoint, with results a paper table and a fusion script can use."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones import backbone_identity
from ..errors import DataError
from ..models import create_assembler
from .builders import backbone_from_config, load_trainable_weights, model_from_config
from .checkpoint import FORMAT
from .distributed import setup_distributed
from .evaluator import ScoreSet, collect_scores
from .logging_utils import dump_json, setup_logging
from .metrics import save_confusion


def default_test_dir(weights: str | Path, protocol: str, *, dense: bool = False, average: str = "prob") -> Path:
    """``<run>/test_<weights stem>_<protocol>[_dense][_logit]``: everything that changes the result is in the name,
    so a second test with other weights or options never replaces the first."""
    weights = Path(weights)
    run_dir = weights.parent.parent if weights.parent.name == "checkpoints" else weights.parent
    name = f"test_{weights.stem}_{protocol}" + ("_dense" if dense else "") + ("_logit" if average == "logit" else "")
    return run_dir / name


def save_scores(path: str | Path, scores: ScoreSet, class_names: list[str], protocol: str,
                average: str = "prob") -> None:
    """Per-video scores for later fusion: ``scores [N, C]``, ``labels``, ``video_ids``, ``indices``, and how the
    views were averaged (``score_average``: prob | logit), so that fusion never mixes the two."""
    np.savez_compressed(path, scores=scores.scores.astype(np.float32), labels=scores.labels, indices=scores.indices,
                        video_ids=np.array(scores.video_ids), class_names=np.array(class_names),
                        protocol=np.array(protocol), score_average=np.array(average))


def run_test(cfg, weights: str | Path, *, test_crops: int | None = None, test_clips: int | None = None,
             dense: bool = False, batch_size: int | None = None, max_views: int = 64, average: str = "prob",
             output: str | Path | None = None) -> dict[str, Any]:
    from ..data import ShardedEvalSampler, build_dataset, build_loader, collate_eval
    dist = setup_distributed()
    crops = int(test_crops or cfg.data.test_crops)
    clips = int(test_clips or cfg.data.test_clips)
    assembler = create_assembler(cfg.network.assembler)
    # built before the output folder exists: a protocol the sampler cannot give leaves nothing behind
    dataset = build_dataset(cfg.data, "test", test_crops=crops, test_clips=clips, dense=dense or None, seed=cfg.seed,
                            sampler=assembler.frame_sampler(cfg.data))
    frames, protocol = assembler.test_protocol(cfg.data, crops, clips)   # e.g. 8x3x2, cluster8x3x1
    out_dir = Path(output) if output else default_test_dir(weights, protocol, dense=dense, average=average)
    log = setup_logging(out_dir, dist.is_main, "test.log")
    backbone = backbone_from_config(cfg, dist.device)
    model = model_from_config(cfg, backbone)
    checkpoint = load_trainable_weights(model, weights, backbone, cfg)
    model.to(dist.device).eval()
    workers = int(cfg.data.workers)
    loader = build_loader(dataset, batch_size=int(batch_size or cfg.data.batch_size),
                          sampler=ShardedEvalSampler(len(dataset), dist.world_size, dist.rank), num_workers=workers,
                          collate_fn=assembler.collate_fn(False) or collate_eval, pin_memory=dist.device.type == "cuda",
                          persistent_workers=False)
    log.info(f"testing {weights} on {len(dataset)} videos, protocol {protocol} (frames x crops x clips), "
             f"{dist.world_size} process(es)")
    start = time.time()
    scores = collect_scores(backbone, model, loader, dist.device, mean=cfg.data.mean, std=cfg.data.std,
                            average=average, max_views_per_forward=max_views, precision=cfg.solver.precision,
                            progress=dist.is_main and cfg.logging.progress, desc=f"test {protocol}",
                            flip_permutation=dataset.flip_permutation(),
                            assembler=assembler)
    elapsed = time.time() - start
    if len(scores.labels) == 0:
        listed = "; ".join(f"{bad['video_id']}: {bad['reason']}" for bad in scores.unreadable[:3])
        raise DataError(f"{cfg.data.val_list}: none of the {len(dataset)} videos could be read ({listed}"
                        f"{' ...' if len(scores.unreadable) > 3 else ''}); nothing was evaluated")
    metrics = scores.metrics(cfg.data.num_classes)
    results = {
        "top1": metrics["top1"], "top5": metrics["top5"], "mean_class_acc": metrics["mean_class_acc"],
        "num_videos": int(len(scores.labels)), "num_views": int(scores.num_views), "protocol": protocol,
        "crops": crops, "clips": clips, "frames": frames, "sampling": "dense" if dense else cfg.data.sampling,
        "score_average": average, "unreadable": scores.unreadable,
        "checkpoint": {"path": str(weights), "epoch": checkpoint.get("epoch"), "format": FORMAT if checkpoint.get("format") == FORMAT else "state_dict",
                       "backbone": backbone_identity(backbone), "head": cfg.network.head},
        "test_time_s": elapsed, "videos_per_s": len(scores.labels) / max(elapsed, 1e-9),
    }
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(dump_json(results))
        save_scores(out_dir / "scores.npz", scores, dataset.class_names, protocol, average)
        save_confusion(metrics["confusion"], dataset.class_names, out_dir)
        with open(out_dir / "per_class_accuracy.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "name", "accuracy", "videos"])
            for index, (name, acc) in enumerate(zip(dataset.class_names, metrics["per_class_acc"])):
                writer.writerow([index, name, "" if acc is None else f"{acc:.2f}",
                                 int(metrics["confusion"][index].sum())])
        log.info(f"{protocol}: top-1 {results['top1']:.2f}  top-5 {results['top5']:.2f}  mean class "
                 f"{results['mean_class_acc']:.2f}  on {results['num_videos']} videos"
                 + (f"; {len(scores.unreadable)} unreadable, excluded (listed in results.json)"
                    if scores.unreadable else "") + f"  -> {out_dir}")
    return results
