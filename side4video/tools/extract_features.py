"""Per-video features of the frozen backbone, written as resumable safetensors shards.

    python -m side4video.tools.extract_features --config CFG.yaml --list LIST --root DIR --out OUT
        [--layers all|every_other|K|i,j,k] [--pool cls|mean|tokens] [--test_crops 1] [--test_clips 1]
        [--shard_size 256] [--batch_size B] [--dtype float32|float16|bfloat16] [--opts ...]

Videos are decoded, sampled and cropped exactly as test.py's 'test' split does (``create_dataset`` on LIST
and DIR, with the config's frames and scale and the given crops x clips). Only the frozen backbone runs;
no trainable weights are needed. Per video the tensor is

* by default, the final image embedding of every frame: ``[views, T, E]``;
* with ``--layers``, the tapped layers' token sequences pooled by ``--pool``: ``cls`` (the class token)
  or ``mean`` (the mean over patch tokens) give ``[views, T, L, W]``, ``tokens`` keeps them all:
  ``[views, T, L, 1+N, W]``.

Layout of OUT: ``features-00000.safetensors`` ... (video i belongs to shard ``i // shard_size``; one tensor
per video, keyed by its sanitised video id), a ``features-00000.json`` manifest per shard, ``index.json``
(every video's shard, key, shape and dtype, the unreadable videos, backbone, layers, views, config and
throughput) and ``labels.csv``. A shard and then its manifest are written atomically (temp file + rename),
so a re-run skips complete shards and an interrupted run resumes to the same bytes as an uninterrupted
one (only ``index.json``'s throughput differs). With several processes (torchrun, or
scripts/extract_features.sh with GPUS=N) rank r extracts shards r, r+W, ...; rank 0 writes ``index.json``.

Views can coincide: crops when the scaled frame is barely larger than the crop (e.g. 10 crops of a 64 x 80
frame at 64 px are 3 boxes, each also flipped), clips when a video is short. Every video's entry (manifest
and index.json) records ``distinct_views``, counted from the view parameters (clip frame indices, crop box,
flip); index.json's ``distinct_views`` sums them up, and one warning line says when some video repeats views.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..backbones import backbone_identity
from ..config import to_plain_dict
from ..data import collate_eval, create_dataset, normalize_frames, read_annotation_list
from ..data.transforms import TEST_CROP_CHOICES
from ..engine.builders import backbone_from_config
from ..engine.distributed import all_gather_objects, barrier, default_device, setup_distributed
from ..engine.logging_utils import progress_bar
from ..errors import DataError, InputNotFoundError
from ..files import atomic_write_bytes
from ..models.assembly import TapAssembler, protocol_name
from ..tasks import require_classification
from .common import add_config_arguments, load_tool_config, positive_int, run_command

FORMAT = "side4video-features-v1"
POOLS = ("cls", "mean", "tokens")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class FeatureSpec:
    """What is extracted per frame: the final embedding (``layers is None``) or pooled layer tokens.

    ``layers`` is any ``FrozenEncoder.resolve_layers`` selection; ``extract_features`` resolves it to indices."""
    layers: Any = None
    pool: str | None = None
    dtype: str = "float32"

    @property
    def kind(self) -> str:
        return "embedding" if self.layers is None else "layers"


def parse_layers(text: str) -> str | int | list[int]:
    """``all`` | ``every_other`` | ``K`` (every K-th layer, ending at the last) | ``i,j,k`` (0-based, negative
    from the end; a single layer is ``i,``)."""
    text = text.strip()
    if text in ("all", "every_other"):
        return text
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes all, every_other, K or i,j,k; got {text!r}") from None


def shard_name(shard: int) -> str:
    return f"features-{shard:05d}"


def tensor_key(video_id: str, index: int, taken: set[str]) -> str:
    """The video id with path separators and odd characters replaced; the index is appended on a clash."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("_") or f"video_{index}"
    return key if key not in taken else f"{key}#{index}"


def pool_tokens(tokens: Sequence[torch.Tensor], pool: str) -> torch.Tensor:
    """Per tapped layer ``[n, 1+N, W]`` → ``[n, L, W]`` (cls / mean of patches) or ``[n, L, 1+N, W]`` (tokens)."""
    if pool == "cls":
        return torch.stack([t[:, 0] for t in tokens], dim=1)
    if pool == "mean":
        return torch.stack([t[:, 1:].mean(dim=1) for t in tokens], dim=1)
    if pool == "tokens":
        return torch.stack(list(tokens), dim=1)
    raise ValueError(f"--pool must be one of {POOLS}, got {pool!r}")


@torch.no_grad()
def frame_features(backbone, frames: torch.Tensor, spec: FeatureSpec, max_views: int = 64,
                   assembler=None) -> torch.Tensor:
    """Normalised ``[B, V, T, 3, H, W]`` → ``[B, V, T, ...]`` features, at most ``max_views`` clips per forward,
    through the same clip assembly as training and testing."""
    assembler = assembler or TapAssembler()
    b, v, t = frames.shape[:3]
    clips = frames.flatten(0, 1)
    outputs = []
    for start in range(0, clips.shape[0], max(1, max_views)):
        chunk = clips[start:start + max_views]
        if spec.layers is None:
            out = assembler(backbone, chunk, layers=[], embedding=True).embedding
        else:
            inputs = assembler(backbone, chunk, layers=list(spec.layers), embedding=False)
            out = pool_tokens([inputs.tokens(i) for i in range(len(inputs.layers))], spec.pool)
        outputs.append(out.to(DTYPES[spec.dtype]).cpu())
    features = torch.cat(outputs)
    return features.reshape(b, v, t, *features.shape[1:])


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def extraction_settings(cfg, dataset, identity: dict[str, Any], spec: FeatureSpec, shard_size: int) -> dict[str, Any]:
    """Everything the features depend on; shards made with other settings must not be mixed in."""
    data = cfg.data
    sampling = {key: data[key] for key in ("num_segments", "seg_length", "sampling", "sampling_rate", "input_size",
                                           "scale_size", "mean", "std", "image_tmpl", "video_backend", "dataset")}
    return {"format": FORMAT, "backbone": {k: identity[k] for k in ("arch", "sha256", "quick_gelu")},
            "backbone_precision": cfg.network.backbone_precision, "feature": spec.kind,
            "layers": list(spec.layers) if spec.layers is not None else None, "pool": spec.pool, "dtype": spec.dtype,
            "crops": dataset.transform.num_crops, "clips": dataset.num_clips, "sampling": sampling,
            "seed": cfg.seed, "shard_size": shard_size,
            "videos": _digest([[r.path, r.num_frames, r.label] for r in dataset.records]),
            "root": str(Path(dataset.root).resolve()) if dataset.root else ""}


def shard_is_complete(out: Path, shard: int, fingerprint: str) -> bool:
    """True when the shard's manifest and tensors are on disk for these settings; an error for other settings."""
    manifest = out / f"{shard_name(shard)}.json"
    if not manifest.is_file():
        return False
    recorded = json.loads(manifest.read_text())
    if recorded.get("fingerprint") != fingerprint:
        raise DataError(f"{manifest} was written with different settings (backbone, layers, pool, views, list or "
                         f"shard size); use another --out or delete {out}")
    tensors = out / recorded["file"]
    return tensors.is_file() and tensors.stat().st_size == recorded["bytes"]


def write_shard(out: Path, shard: int, tensors: dict[str, torch.Tensor], videos: list[dict], unreadable: list[dict],
                fingerprint: str) -> None:
    """Tensors first, then the manifest that marks the shard complete; both atomically and deterministically."""
    from safetensors.torch import save  # deferred: only the shard writer needs it
    # one metadata entry: safetensors writes several in hash order, which would differ between runs
    metadata = {"side4video": json.dumps({"format": FORMAT, "shard": shard, "fingerprint": fingerprint},
                                         sort_keys=True)}
    payload = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    file = f"{shard_name(shard)}.safetensors"
    atomic_write_bytes(out / file, payload)
    manifest = {"shard": shard, "file": file, "bytes": len(payload), "fingerprint": fingerprint,
                "videos": videos, "unreadable": unreadable}
    atomic_write_bytes(out / f"{shard_name(shard)}.json", json.dumps(manifest, indent=1).encode())


def shard_batches(pending: Sequence[int], shard_size: int, num_videos: int, batch_size: int) -> list[list[int]]:
    """Batches that never cross a shard: a video's features then depend only on its shard, not on which shards
    a (resumed) run still had to do, so resumed and uninterrupted runs write the same bytes."""
    batches = []
    for shard in pending:
        indices = list(range(shard * shard_size, min((shard + 1) * shard_size, num_videos)))
        batches += [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    return batches


def _rank_and_world() -> tuple[int, int, torch.device]:
    """The process group when launched with several processes; a plain run needs none (nor DeepSpeed)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        info = setup_distributed()
        return info.rank, info.world_size, info.device
    return 0, 1, default_device()


def _reason(batch: dict[str, Any], root: str, video_id: str) -> str:
    """Why an evaluation sample is invalid: its read errors (readers report ``root/video_id``)."""
    path = os.path.join(root, video_id)
    reasons = [reason for where, reason in batch["errors"] if os.path.normpath(where) == os.path.normpath(path)]
    return "; ".join(reasons) or "unreadable"


def extract_features(cfg, list_file: str | Path, root: str | Path, out: str | Path, *,
                     spec: FeatureSpec = FeatureSpec(), test_crops: int | None = None,
                     test_clips: int | None = None, shard_size: int = 256, batch_size: int | None = None,
                     workers: int | None = None, max_views: int = 64, progress: bool = True) -> dict[str, Any] | None:
    """Extract (or finish extracting) the features of every video of ``list_file``; returns index.json's content
    on rank 0 (None on other ranks)."""
    # the lists are labelled recognition lists (data.num_classes, labels.csv): refuse other tasks before a process
    # group or the backbone is set up
    require_classification(cfg, "side4video extract", "for a retrieval model's video and caption embeddings use "
                                                      "side4video extract-retrieval")
    if shard_size < 1:
        raise ValueError(f"--shard_size must be positive, got {shard_size}")
    rank, world, device = _rank_and_world()
    records = read_annotation_list(str(list_file), num_classes=int(cfg.data.num_classes))
    dataset = create_dataset(cfg.data, "test", test_crops=test_crops, test_clips=test_clips, seed=cfg.seed,
                            records=records, root=str(root))
    backbone = backbone_from_config(cfg, device)
    if spec.layers is not None:  # resolve 'all', K, negative indices ... once, for the shapes and the index
        spec = FeatureSpec(tuple(backbone.resolve_layers(spec.layers)), spec.pool or "cls", spec.dtype)
        if not spec.layers:
            raise DataError("--layers selects no layer")
    identity = backbone_identity(backbone)
    settings = extraction_settings(cfg, dataset, identity, spec, shard_size)
    fingerprint = _digest(settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    num_shards = math.ceil(len(dataset) / shard_size)
    pending = [s for s in range(rank, num_shards, world) if not shard_is_complete(out, s, fingerprint)]
    batches = shard_batches(pending, shard_size, len(dataset), int(batch_size or cfg.data.batch_size))
    workers = int(cfg.data.workers if workers is None else workers)
    writer = _ShardWriter(out, shard_size, len(dataset), fingerprint)
    stats = _extract_batches(dataset, batches, backbone, spec, writer, cfg=cfg, device=device, workers=workers,
                             max_views=max_views, progress=progress and rank == 0,
                             desc=f"features (rank {rank})" if world > 1 else "features")
    per_rank = all_gather_objects(stats)
    barrier()  # every shard is on disk before rank 0 reads the manifests
    if rank != 0:
        return None
    index = build_index(out, cfg, dataset, identity, spec, settings, fingerprint, num_shards, per_rank)
    index["list"], index["root"] = str(list_file), str(root)
    atomic_write_bytes(out / "index.json", json.dumps(index, indent=1).encode())
    warning = duplicate_views_warning(index, out)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    labels = "id,name\n" + "".join(f"{i},{_csv(name)}\n" for i, name in enumerate(dataset.class_names))
    atomic_write_bytes(out / "labels.csv", labels.encode())
    return index


# -- views that coincide ----------------------------------------------------------------------------------------
def summarize_distinct_views(videos: Sequence[dict], requested: int) -> dict[str, Any]:
    """index.json's ``distinct_views``: the requested views per video, the fewest and most distinct ones among the
    extracted videos, and how many videos have coinciding views (videos of shards written without the count are
    left out)."""
    counts = [v["distinct_views"] for v in videos if v.get("distinct_views") is not None]
    return {"requested": requested, "min": min(counts, default=None), "max": max(counts, default=None),
            "videos_with_duplicates": sum(count < requested for count in counts)}


def duplicate_views_warning(index: dict[str, Any], out: str | Path) -> str | None:
    """One line saying how many videos repeat views, or None when every video's views all differ."""
    summary, views = index["distinct_views"], index["views"]
    requested = summary["requested"]
    duplicated = [v for v in index["videos"] if v.get("distinct_views") is not None and v["distinct_views"] < requested]
    if not duplicated:
        return None
    fewest = min(duplicated, key=lambda v: v["distinct_views"])
    amount = "only" if summary["min"] == summary["max"] else "as few as"
    noun = "view" if summary["min"] == 1 else "views"
    return (f"{len(duplicated)} of {len(index['videos'])} videos have {amount} {summary['min']} distinct {noun} of the "
            f"{requested} requested ({views['crops']} crops x {views['clips']} clips; e.g. {fewest['video_id']!r}): "
            "crops coincide when the scaled frame is barely larger than the crop, clips when a video is short, and "
            f"repeated views weigh more in a view average (per video: distinct_views in {Path(out) / 'index.json'})")


def _extract_batches(dataset, batches: list[list[int]], backbone, spec: FeatureSpec, writer: "_ShardWriter", *,
                     cfg, device: torch.device, workers: int, max_views: int, progress: bool,
                     desc: str) -> dict[str, Any]:
    """Run the backbone over ``batches`` and hand every video to ``writer``; returns this process's throughput."""
    # create_loader takes a sampler, not a batch sampler, and batches must stay inside a shard (see shard_batches)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches,
                                         num_workers=workers if batches else 0,
                                         collate_fn=collate_eval, pin_memory=device.type == "cuda")
    stats: dict[str, Any] = {"videos": 0, "frames": 0, "device": str(device)}
    start = time.perf_counter()
    with progress_bar(total=sum(len(b) for b in batches), desc=desc, unit="video", disable=not progress) as bar:
        for batch in loader:
            valid = batch["valid"].bool()
            readable: Iterator[torch.Tensor] = iter(())
            if valid.any():
                frames = normalize_frames(batch["frames"][valid].to(device, non_blocking=True),
                                          cfg.data.mean, cfg.data.std)
                readable = iter(frame_features(backbone, frames, spec, max_views))
                stats["videos"] += int(frames.shape[0])
                stats["frames"] += int(frames.shape[:3].numel())
            for index, video_id, ok, label, distinct in zip(batch["index"].tolist(), batch["video_id"],
                                                            valid.tolist(), batch["label"].tolist(),
                                                            batch["distinct_views"]):
                entry = {"index": index, "video_id": video_id, "label": int(label)}
                if ok:
                    writer.add({**entry, "distinct_views": distinct}, next(readable))
                else:
                    writer.add({**entry, "reason": _reason(batch, dataset.root, video_id)}, None)
                bar.update(1)
    stats["seconds"] = time.perf_counter() - start
    return stats


class _ShardWriter:
    """Collects one shard's videos (they arrive in index order) and writes the shard after its last video."""

    def __init__(self, out: Path, shard_size: int, num_videos: int, fingerprint: str):
        self.out, self.shard_size, self.num_videos, self.fingerprint = out, shard_size, num_videos, fingerprint
        self.written = 0
        self._reset()

    def _reset(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.videos: list[dict] = []
        self.unreadable: list[dict] = []

    def add(self, entry: dict, features: torch.Tensor | None) -> None:
        """A readable video's features, or an unreadable one's entry (with its ``reason``) and None."""
        if features is None:
            self.unreadable.append(entry)
        else:
            key = tensor_key(entry["video_id"], entry["index"], set(self.tensors))
            self.tensors[key] = features
            self.videos.append({**entry, "key": key, "shape": list(features.shape),
                                "dtype": str(features.dtype).replace("torch.", "")})
        shard = entry["index"] // self.shard_size
        if entry["index"] == min((shard + 1) * self.shard_size, self.num_videos) - 1:
            write_shard(self.out, shard, self.tensors, self.videos, self.unreadable, self.fingerprint)
            self._reset()
            self.written += 1


def build_index(out: Path, cfg, dataset, identity: dict, spec: FeatureSpec, settings: dict, fingerprint: str,
                num_shards: int, per_rank: list[dict]) -> dict[str, Any]:
    """index.json: global facts, then every video (from the shard manifests, all of which must exist)."""
    missing = [shard_name(s) for s in range(num_shards) if not (out / f"{shard_name(s)}.json").is_file()]
    if missing:
        raise DataError(f"{out}: shard(s) {missing[:5]} were not written; run the extraction again to finish")
    videos, unreadable, shards = [], [], []
    for s in range(num_shards):
        manifest = json.loads((out / f"{shard_name(s)}.json").read_text())
        videos += [{**v, "shard": s, "file": manifest["file"]} for v in manifest["videos"]]
        unreadable += [{**u, "shard": s} for u in manifest["unreadable"]]
        shards.append({"file": manifest["file"], "videos": len(manifest["videos"]), "bytes": manifest["bytes"]})
    frames = int(cfg.data.num_segments) * int(cfg.data.seg_length)
    crops, clips = settings["crops"], settings["clips"]
    config = to_plain_dict(cfg)
    return {
        "format": FORMAT, "arch": identity["arch"], "backbone": identity, "backbone_sha256": identity["sha256"],
        "feature": spec.kind, "layers": settings["layers"], "pool": spec.pool, "dtype": spec.dtype,
        "views": {"crops": crops, "clips": clips, "num_views": crops * clips, "frames": frames},
        "protocol": protocol_name(frames, crops, clips), "shape": _shape_doc(spec),
        "num_videos": len(dataset), "num_extracted": len(videos), "shard_size": settings["shard_size"],
        "num_shards": num_shards, "shards": shards, "fingerprint": fingerprint, "class_names": dataset.class_names,
        "distinct_views": summarize_distinct_views(videos, crops * clips),
        "config": config, "videos": videos, "unreadable": unreadable,
        "throughput": _throughput(per_rank, out),
    }


def _shape_doc(spec: FeatureSpec) -> str:
    if spec.layers is None:
        return "[views, T, E]"
    return "[views, T, L, 1+N, W]" if spec.pool == "tokens" else "[views, T, L, W]"


def _throughput(per_rank: list[dict], out: Path) -> dict[str, Any]:
    """Videos/s and frames/s of this run (all processes); a run that found everything done keeps the last one."""
    videos, frames = sum(r["videos"] for r in per_rank), sum(r["frames"] for r in per_rank)
    seconds = max(r["seconds"] for r in per_rank)
    previous = out / "index.json"
    if videos == 0 and previous.is_file():
        return json.loads(previous.read_text()).get("throughput", {})
    return {"videos": videos, "frames": frames, "seconds": round(seconds, 3), "processes": len(per_rank),
            "device": per_rank[0]["device"], "videos_per_s": round(videos / max(seconds, 1e-9), 3),
            "frames_per_s": round(frames / max(seconds, 1e-9), 3)}


def _csv(text: str) -> str:
    return f'"{text}"' if "," in text or '"' in text else text


# -- reading features back -------------------------------------------------------------------------------------
def read_index(out: str | Path) -> dict[str, Any]:
    """``OUT/index.json`` (raises FileNotFoundError naming the folder when the extraction did not finish)."""
    path = Path(out) / "index.json"
    if not path.is_file():
        raise InputNotFoundError(f"{path} not found: not a finished feature extraction (run extract_features)")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise DataError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    return index


def iter_features(out: str | Path, index: dict[str, Any] | None = None) -> Iterator[tuple[dict, torch.Tensor]]:
    """``(video entry, tensor)`` for every extracted video, in video order, one shard in memory at a time."""
    from safetensors.torch import load_file  # deferred: only the shard reader needs it
    out = Path(out)
    index = index or read_index(out)
    loaded_file, tensors = None, {}
    for video in index["videos"]:
        if video["file"] != loaded_file:
            path = out / video["file"]
            if not path.is_file():
                raise InputNotFoundError(f"{path} (listed in {out / 'index.json'}) is missing")
            loaded_file, tensors = video["file"], load_file(str(path))
        if video["key"] not in tensors:
            raise DataError(f"{out / video['file']} has no tensor {video['key']!r} (listed in index.json)")
        yield video, tensors[video["key"]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="side4video extract",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="Resume an interrupted run with the same command. Launch several "
                                            "processes with scripts/extract_features.sh (GPUS=N).")
    add_config_arguments(parser)
    parser.add_argument("--list", required=True, help="annotation list of the videos (TSN format)")
    parser.add_argument("--root", required=True, help="folder the list's paths are relative to")
    parser.add_argument("--out", required=True, help="output folder (shards, manifests, index.json)")
    parser.add_argument("--layers", type=parse_layers, default=None,
                        help="tap these backbone layers instead of taking the final embedding: all, every_other, "
                             "K (every K-th) or i,j,k (0-based; a single layer as 'i,'; negative from the end, "
                             "written --layers=-1,)")
    parser.add_argument("--pool", choices=POOLS, default=None,
                        help="with --layers: cls token, mean of patch tokens, or all tokens (default: cls)")
    parser.add_argument("--test_crops", type=int, default=None, choices=TEST_CROP_CHOICES,
                        help="spatial crops per clip (default: data.test_crops)")
    parser.add_argument("--test_clips", type=positive_int, default=None,
                        help="temporal clips per video (default: data.test_clips)")
    parser.add_argument("--shard_size", type=positive_int, default=256, help="videos per shard file (default: 256)")
    parser.add_argument("--batch_size", type=positive_int, default=None,
                        help="videos per forward batch (default: data.batch_size)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: data.workers)")
    parser.add_argument("--max_views", type=positive_int, default=64,
                        help="at most this many clips per backbone forward")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="stored dtype (default: float32)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    # accepted from launchers (torch.distributed.launch / deepspeed) like train.py does
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pool is not None and args.layers is None:
        parser.error("--pool applies to layer tokens: give --layers too (the default output is the final embedding)")
    spec = FeatureSpec(layers=args.layers, pool=args.pool, dtype=args.dtype)
    return run_command(lambda: _run(args, spec), code=2)


def _run(args, spec: FeatureSpec) -> int:
    cfg = load_tool_config(args.config, args.opts)
    index = extract_features(cfg, args.list, args.root, args.out, spec=spec, test_crops=args.test_crops,
                             test_clips=args.test_clips, shard_size=args.shard_size, batch_size=args.batch_size,
                             workers=args.workers, max_views=args.max_views, progress=not args.no_progress)
    if index is not None:
        rate = index["throughput"]
        print(f"{index['num_extracted']} of {index['num_videos']} videos, {index['feature']} {index['shape']}, "
              f"{index['num_shards']} shard(s) -> {args.out}"
              + (f"; {len(index['unreadable'])} unreadable (listed in index.json)" if index["unreadable"] else "")
              + (f"; {rate['videos_per_s']:.2f} videos/s, {rate['frames_per_s']:.1f} frames/s" if rate.get("videos")
                 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
