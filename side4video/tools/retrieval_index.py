"""Retrieval embeddings of a checkpoint, extracted once into a resumable index; evaluation from that index.

    python -m side4video.tools.retrieval_index extract --weights CKPT [--config CFG] [--opts ...] --out DIR
        [--split val|train] [--shard_size 256] [--batch_size B] [--workers W] [--text_dtype float32|float16]
    python -m side4video.tools.retrieval_index evaluate --index DIR [--out DIR] [--text_chunk N]

(``side4video extract-retrieval ...``: ``extract`` may be left out.)

``extract`` runs the checkpoint's retrieval model as test.py does (eval mode, the task's test sampling, the centre
view, ``data.batch_size`` videos per forward, ``solver.precision``) over the videos of a split (``val``: the
evaluation set test.py scores; any MSR-VTT / JSON-lines list can be given through ``--opts data.val_csv=...``) and
over their captions. Layout of DIR:

* ``videos-00000.npz`` ...: video ``i`` belongs to shard ``i // shard_size``; ``frames`` float32 ``[n, T, D]``
  (``encode_video``: per-frame embeddings, not normalised), ``index`` int64 ``[n]`` (the videos' positions),
  ``valid`` bool ``[n]`` (false: unreadable; its embedding is that of the all-zero clip, as test.py scores it);
* ``captions.npz``: ``sentence`` float32 ``[N, D]``, ``words`` ``[N, 77, D]`` (``--text_dtype``; WTI only),
  ``word_mask`` bool ``[N, 77]``, ``caption_video`` int64 ``[N]`` (caption → video position), ``texts`` ``[N]``;
* ``index.json``: the manifest (``complete``, the checkpoint's path, sha256, epoch and ``sim_header``, the backbone
  identity, the data settings, the config, ``video_ids`` / ``video_paths`` in order, ``embed_dim``, ``frames``,
  every finished shard with its size and unreadable videos, the captions file).

A shard, then the manifest listing it, are written atomically (temp file + rename) after the shard's last video, so
a killed run resumes from its last complete shard with the same command, and the files of a resumed run are the
bytes of an uninterrupted one (batches never cross a shard). A complete index with the same settings is not
recomputed; other settings (checkpoint contents, config, split, shard size, ...) in the same DIR are refused.

Nothing that the checkpoint holds is copied: ``evaluate`` and ``search`` reload the similarity head (WTI's weight
networks and the logit scale, a few kB) from the checkpoint the manifest names, checking its sha256, and never the
backbone. ``evaluate`` scores every caption against every video in chunks of ``task.text_chunk`` captions, exactly
as test.py does, and writes ``results.json``, ``sims.npz`` and ``retrieval.json`` (the task's files): with float32
words the numbers are test.py's.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..backbones import backbone_identity
from ..backbones.weights import file_sha256
from ..config import load_config, to_plain_dict
from ..data.transforms import normalize_frames
from ..engine.builders import (
    backbone_from_config,
    config_for_checkpoint,
    load_trainable_weights,
    model_from_config,
    read_trainable_checkpoint,
)
from ..engine.checkpoint import FORMATS, trainable_state_dict
from ..engine.distributed import default_device
from ..engine.logging_utils import dump_json, progress_bar
from ..engine.testing import RETRIEVAL_IDENTITY_KEYS
from ..errors import CheckpointError, ConfigError, DataError, InputNotFoundError
from ..files import atomic_write, atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from ..retrieval.annotations import CaptionSet
from ..retrieval.data import TEST_SAMPLING, RetrievalVideos, collate_videos
from ..retrieval.model import MAX_LOGIT_SCALE, RetrievalModel
from ..retrieval.similarity import WeightedTokenInteraction
from ..tasks import autocast_context, create_task
from ..tasks.retrieval import read_captions
from .common import add_config_arguments, positive_int, run_command
from .extract_features import shard_batches

FORMAT = "side4video-retrieval-index-v1"
INDEX_FILE = "index.json"
CAPTIONS_FILE = "captions.npz"
TEXT_DTYPES = {"float32": np.float32, "float16": np.float16}
SPLITS = ("val", "train")


def shard_file(shard: int) -> str:
    return f"videos-{shard:05d}.npz"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# -- deterministic files ---------------------------------------------------------------------------------------
def write_npz(handle: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` with fixed zip timestamps: ``np.savez`` stamps each member with the current time, so a shard
    recomputed after a kill would differ in bytes from the uninterrupted run's."""
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> int:
    """Write ``arrays`` atomically (streamed: a captions file can be large); returns the file's size."""
    size_hint = sum(np.asanyarray(a).nbytes for a in arrays.values())
    atomic_write(path, lambda handle: write_npz(handle, arrays), size_hint=size_hint)
    return path.stat().st_size


def load_npz(path: Path, size: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an index file (one-line errors when it is missing or not the size the manifest says)."""
    if not path.is_file():
        raise InputNotFoundError(f"{path} (listed in {path.parent / INDEX_FILE}) is missing; run the extraction "
                                 "again to rewrite it")
    if size is not None and path.stat().st_size != size:
        raise DataError(f"{path} has {path.stat().st_size} bytes, the manifest says {size}; run the extraction again")
    with np.load(path, allow_pickle=False) as loaded:
        return {name: loaded[name] for name in loaded.files}


def _file_done(out: Path, entry: Mapping[str, Any] | None) -> bool:
    return bool(entry) and (out / entry["file"]).is_file() and (out / entry["file"]).stat().st_size == entry["bytes"]


# -- what is extracted -----------------------------------------------------------------------------------------
class IndexVideos(Dataset):
    """The split's videos as test.py reads them; a video that is not there at all (``video_location`` raises) is an
    unreadable item too, so one missing file is listed instead of stopping the extraction."""

    def __init__(self, videos: RetrievalVideos):
        self.videos = videos

    def __len__(self) -> int:
        return len(self.videos)

    def path(self, video: int) -> str:
        try:
            return os.path.abspath(self.videos.location(video))
        except InputNotFoundError:
            return os.path.abspath(os.path.join(self.videos.features_path, self.videos.captions.videos[video]))

    def __getitem__(self, video: int) -> dict[str, Any]:
        try:
            return self.videos[video]
        except InputNotFoundError as error:
            size, frames = self.videos.input_size, self.videos.max_frames
            return dict(frames=torch.zeros(frames, 3, size, size, dtype=torch.uint8), index=video, valid=False,
                        video_id=self.videos.captions.videos[video], errors=[(self.path(video), str(error))])


def collate_index_videos(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``collate_videos`` plus each video's own read errors (``reasons``), which the manifest lists."""
    batch = collate_videos(samples)
    batch["reasons"] = ["; ".join(reason for _, reason in s["errors"]) or "unreadable" for s in samples]
    return batch


def split_videos(cfg, split: str) -> tuple[CaptionSet, RetrievalVideos]:
    """The captions of ``split`` and their videos, sampled as the task samples its evaluation set."""
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    data = cfg.data
    captions = read_captions(data, split)
    videos = RetrievalVideos(captions, data.features_path, max_frames=int(data.max_frames),
                             input_size=int(data.input_size), slice_framepos=int(data.slice_framepos),
                             image_tmpl=data.image_tmpl, video_backend=data.video_backend, seed=cfg.seed,
                             mode=TEST_SAMPLING.get(str(data.dataset).lower(), "stride"))
    return captions, videos


def portable_config(cfg) -> dict[str, Any]:
    """The config as plain data, with the backbone's JSON config and weight file made absolute: ``search`` rebuilds
    the text tower from it, possibly from another working folder."""
    plain = to_plain_dict(cfg)
    network = plain["network"]
    for key in ("arch", "pretrained"):
        value = network.get(key)
        if isinstance(value, str) and os.path.isfile(value):
            network[key] = os.path.abspath(value)
    return plain


def extraction_settings(cfg, weights_sha: str, split: str, captions: CaptionSet, paths: list[str],
                        shard_size: int, batch_size: int, text_dtype: str) -> dict[str, Any]:
    """Everything the stored embeddings depend on; an index made with other settings must not be continued."""
    config = to_plain_dict(cfg)
    return {"format": FORMAT, "checkpoint_sha256": weights_sha, "split": split, "shard_size": shard_size,
            "batch_size": batch_size, "text_dtype": text_dtype, "network": config["network"], "task": config["task"],
            "data": {key: config["data"].get(key) for key in (*RETRIEVAL_IDENTITY_KEYS, "mean", "std")},
            "precision": config["solver"]["precision"], "seed": cfg.seed,
            "videos": _digest([captions.videos, paths]),
            "captions": _digest([captions.captions, captions.caption_video])}


def write_video_shard(out: Path, shard: int, frames: list[torch.Tensor], indices: list[int],
                      valid: list[bool]) -> int:
    """One shard's arrays (a module-level function so a test can stop an extraction right after a shard)."""
    return save_npz(out / shard_file(shard), {"frames": torch.stack(frames).numpy().astype(np.float32),
                                              "index": np.asarray(indices, dtype=np.int64),
                                              "valid": np.asarray(valid, dtype=bool)})


def write_manifest(out: Path, manifest: Mapping[str, Any]) -> None:
    atomic_write_bytes(out / INDEX_FILE, (json.dumps(manifest, indent=1) + "\n").encode())


class _ShardWriter:
    """Collects a shard's videos (they arrive in order) and, after its last one, writes the shard and then the
    manifest that lists it."""

    def __init__(self, out: Path, manifest: dict[str, Any], shard_size: int, num_videos: int):
        self.out, self.manifest, self.shard_size, self.num_videos = out, manifest, shard_size, num_videos
        self.frames: list[torch.Tensor] = []
        self.indices: list[int] = []
        self.valid: list[bool] = []
        self.unreadable: list[dict[str, Any]] = []

    def add(self, index: int, frames: torch.Tensor, valid: bool, reason: str) -> None:
        self.frames.append(frames)
        self.indices.append(index)
        self.valid.append(valid)
        if not valid:
            self.unreadable.append({"index": index, "video_id": self.manifest["video_ids"][index],
                                    "path": self.manifest["video_paths"][index], "reason": reason})
        shard = index // self.shard_size
        if index == min((shard + 1) * self.shard_size, self.num_videos) - 1:
            size = write_video_shard(self.out, shard, self.frames, self.indices, self.valid)
            entry = {"shard": shard, "file": shard_file(shard), "bytes": size, "first": self.indices[0],
                     "videos": len(self.indices), "unreadable": self.unreadable}
            shards = [s for s in self.manifest["shards"] if s["shard"] != shard] + [entry]
            self.manifest["shards"] = sorted(shards, key=lambda s: s["shard"])
            write_manifest(self.out, self.manifest)
            self.frames, self.indices, self.valid, self.unreadable = [], [], [], []


@torch.no_grad()
def encode_captions(model: RetrievalModel, texts: Sequence[str], chunk: int, device: torch.device,
                    precision: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sentence [N, D], words [N, 77, D], mask [N, 77] bool)``, ``chunk`` captions per text-tower forward and
    under the same autocast as the task's evaluation, so each caption's embedding is test.py's."""
    sentences, words, masks = [], [], []
    with autocast_context(device, precision):
        for start in range(0, len(texts), chunk):
            tokens, mask = model.tokenize(list(texts[start:start + chunk]))
            sentence, word = model.encode_text(tokens.to(device), mask.to(device))
            sentences.append(sentence.float().cpu())
            words.append(word.float().cpu())
            masks.append(mask.bool())
    return torch.cat(sentences), torch.cat(words), torch.cat(masks)


def extract_index(cfg, weights: str | Path, out: str | Path, *, split: str = "val", shard_size: int = 256,
                  batch_size: int | None = None, workers: int | None = None, text_dtype: str = "float32",
                  device: torch.device | str | None = None, progress: bool = True) -> dict[str, Any]:
    """Extract (or finish extracting) the index of ``split`` into ``out``; returns the manifest (``index.json``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:   # every process would write the same shards
        raise ConfigError("the retrieval index is extracted by one process; launch it without torchrun/deepspeed")
    task = create_task(cfg)
    if task.name != "retrieval":
        raise ConfigError(f"the config's task is {task.name!r}; retrieval indexes need task: {{type: retrieval}}")
    weights = Path(weights).resolve()
    if not weights.is_file():
        raise InputNotFoundError(f"checkpoint not found: {weights}")
    captions, retrieval_videos = split_videos(cfg, split)
    videos = IndexVideos(retrieval_videos)
    paths = [videos.path(i) for i in range(len(videos))]
    batch_size = int(batch_size or cfg.data.batch_size)
    settings = extraction_settings(cfg, file_sha256(weights), split, captions, paths, shard_size, batch_size,
                                   text_dtype)
    fingerprint = _digest(settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)          # what a write killed midway left behind
    previous = json.loads((out / INDEX_FILE).read_text()) if (out / INDEX_FILE).is_file() else None
    if previous is not None and previous.get("fingerprint") != fingerprint:
        raise DataError(f"{out / INDEX_FILE} was extracted with other settings (checkpoint contents, config, split, "
                        f"shard size, batch size or text dtype); use another --out or delete {out}")
    if previous is not None and previous.get("complete") and all(
            _file_done(out, s) for s in previous["shards"]) and _file_done(out, previous["captions"]):
        previous["already_complete"] = True
        return previous

    device = torch.device(device) if device is not None else default_device()
    backbone = backbone_from_config(cfg, device)
    model = model_from_config(cfg, backbone)
    checkpoint = load_trainable_weights(model, weights, backbone, cfg)
    model.to(device).eval()
    num_shards = math.ceil(len(videos) / shard_size)
    manifest = {
        "format": FORMAT, "complete": False, "fingerprint": fingerprint, "split": split,
        "checkpoint": {"path": str(weights), "sha256": settings["checkpoint_sha256"], "epoch": checkpoint.get("epoch"),
                       "format": checkpoint.get("format") if checkpoint.get("format") in FORMATS else "state_dict",
                       "sim_header": task.sim_header, "video_head": task.video_head},
        "backbone": backbone_identity(backbone),
        "data": {key: cfg.data.get(key) for key in RETRIEVAL_IDENTITY_KEYS},
        "embed_dim": int(model.embed_dim), "frames": int(cfg.data.max_frames), "max_words": int(cfg.data.max_words),
        "precision": cfg.solver.precision, "batch_size": batch_size, "shard_size": shard_size,
        "num_shards": num_shards, "num_videos": len(videos), "num_captions": len(captions.captions),
        "multi_caption": captions.multi_caption, "text_dtype": text_dtype,
        "video_ids": list(captions.videos), "video_paths": paths,
        "shards": [s for s in (previous or {}).get("shards", []) if _file_done(out, s)],
        "captions": None, "unreadable": [], "config": portable_config(cfg),
    }
    done = {s["shard"] for s in manifest["shards"]}
    pending = [s for s in range(num_shards) if s not in done]
    batches = shard_batches(pending, shard_size, len(videos), batch_size)
    write_manifest(out, manifest)
    start = time.perf_counter()
    _extract_videos(model, videos, batches, _ShardWriter(out, manifest, shard_size, len(videos)), cfg=cfg,
                    device=device, workers=int(cfg.data.workers if workers is None else workers), progress=progress)
    seconds = time.perf_counter() - start

    previous_captions = (previous or {}).get("captions")
    if _file_done(out, previous_captions):
        manifest["captions"] = previous_captions
    else:
        sentence, words, mask = encode_captions(model, captions.captions, task.text_chunk, device,
                                                cfg.solver.precision)
        arrays = {"sentence": sentence.numpy(), "word_mask": mask.numpy(),
                  "caption_video": np.asarray(captions.caption_video, dtype=np.int64),
                  "texts": np.asarray(captions.captions, dtype=str)}
        if task.sim_header == "wti":          # meanP reads the sentence embedding only
            arrays["words"] = words.numpy().astype(TEXT_DTYPES[text_dtype])
        size = save_npz(out / CAPTIONS_FILE, arrays)
        manifest["captions"] = {"file": CAPTIONS_FILE, "bytes": size, "count": len(captions.captions),
                                "words": "words" in arrays}
    manifest["unreadable"] = [u for s in manifest["shards"] for u in s["unreadable"]]
    manifest["complete"] = True
    write_manifest(out, manifest)
    return {**manifest, "extracted_videos": sum(len(b) for b in batches), "seconds": seconds}


def _extract_videos(model: RetrievalModel, videos: IndexVideos, batches: list[list[int]], writer: _ShardWriter, *,
                    cfg, device: torch.device, workers: int, progress: bool) -> None:
    """``encode_video`` over ``batches`` (each inside one shard), every video handed to ``writer`` in order."""
    loader = DataLoader(videos, batch_sampler=batches, num_workers=workers if batches else 0,
                        collate_fn=collate_index_videos, pin_memory=device.type == "cuda")
    with progress_bar(total=sum(len(b) for b in batches), desc="videos", unit="video", disable=not progress) as bar, \
            torch.no_grad(), autocast_context(device, cfg.solver.precision):
        for batch in loader:
            frames = normalize_frames(batch["frames"].to(device), cfg.data.mean, cfg.data.std)
            embeddings = model.encode_video(frames).float().cpu()     # what the task's evaluation keeps
            for i, index in enumerate(batch["index"].tolist()):
                writer.add(index, embeddings[i], bool(batch["valid"][i]), batch["reasons"][i])
            bar.update(len(batch["index"]))


# -- reading an index back -------------------------------------------------------------------------------------
def read_index(index_dir: str | Path) -> dict[str, Any]:
    """A complete index's manifest (one-line errors for a folder that is not one, or whose extraction stopped)."""
    path = Path(index_dir) / INDEX_FILE
    if not path.is_file():
        raise InputNotFoundError(f"{path} not found: not a retrieval index (run side4video extract-retrieval)")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if index.get("format") != FORMAT:
        raise DataError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    if not index.get("complete"):
        raise DataError(f"{path}: the extraction did not finish ({len(index.get('shards', []))} of "
                        f"{index.get('num_shards')} video shards); run the same extract command again to complete it")
    return index


def load_video_embeddings(index_dir: str | Path, index: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every video's frame embeddings ``[Nv, T, D]`` (float32) and ``valid [Nv]``, in video order."""
    frames, valid = [], []
    for entry in index["shards"]:
        arrays = load_npz(Path(index_dir) / entry["file"], entry["bytes"])
        frames.append(torch.from_numpy(arrays["frames"]))
        valid.append(torch.from_numpy(arrays["valid"]))
    frames_all, valid_all = torch.cat(frames), torch.cat(valid)
    if frames_all.shape[0] != index["num_videos"]:
        raise DataError(f"{index_dir}: the shards hold {frames_all.shape[0]} videos, the manifest "
                        f"{index['num_videos']}")
    return frames_all, valid_all


def load_captions(index_dir: str | Path, index: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return load_npz(Path(index_dir) / index["captions"]["file"], index["captions"]["bytes"])


class SimilarityHead(nn.Module):
    """The retrieval model's trainable scoring part without its towers: WTI's two weight networks (``wti.*``) and
    the logit scale, loaded from the checkpoint."""

    # the model's own scoring code (it reads only ``self.wti``): offline scores are the model's, not a copy's
    similarity = RetrievalModel.similarity

    def __init__(self, embed_dim: int, sim_header: str):
        super().__init__()
        self.sim_header = sim_header
        self.wti = WeightedTokenInteraction(embed_dim) if sim_header == "wti" else None
        self.logit_scale = nn.Parameter(torch.zeros(1))

    def scale(self) -> torch.Tensor:
        """``exp`` of the clamped logit scale, as :meth:`RetrievalModel.scale`."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()


def load_head(index: Mapping[str, Any], device: torch.device | str = "cpu"
              ) -> tuple[SimilarityHead, dict[str, torch.Tensor]]:
    """The similarity head from the checkpoint the index names (refused when the file changed since extraction),
    and the checkpoint's trainable state (a search needs its text tower's weights when it was trained)."""
    recorded = index["checkpoint"]
    path = Path(recorded["path"])
    if not path.is_file():
        raise InputNotFoundError(f"checkpoint {path} (named by the index) not found; the index needs it for the "
                                 "similarity head")
    if file_sha256(path) != recorded["sha256"]:
        raise CheckpointError(f"{path} changed since the index was extracted (sha256 {recorded['sha256'][:12]}…); "
                              "extract the index again")
    state = trainable_state_dict(read_trainable_checkpoint(path))
    head = SimilarityHead(int(index["embed_dim"]), recorded["sim_header"])
    wanted = set(head.state_dict())
    missing = sorted(wanted - set(state))
    if missing:
        raise CheckpointError(f"{path} has no {missing[0]}: not a checkpoint of a {recorded['sim_header']} retrieval "
                              "model")
    head.load_state_dict({k: state[k] for k in wanted})
    return head.requires_grad_(False).to(device).eval(), state


def index_config(index: Mapping[str, Any]):
    """The config the index was extracted with (validated), e.g. for the task's metrics or the text tower."""
    return load_config(None, [], base=index["config"])


@torch.no_grad()
def similarity_matrix(head: SimilarityHead, sentence: torch.Tensor, words: torch.Tensor | None,
                      word_mask: torch.Tensor, frames: torch.Tensor, *, chunk: int, device: torch.device,
                      precision: str) -> torch.Tensor:
    """Captions × videos, ``chunk`` captions at a time against every video (the task's evaluation, step by step)."""
    video_frames = frames.to(device)
    rows = []
    with autocast_context(device, precision):
        for start in range(0, sentence.shape[0], chunk):
            part = slice(start, start + chunk)
            text = sentence[part].to(device).float()
            word = words[part].to(device).float() if words is not None else text.new_zeros(text.shape[0], 1, 1)
            mask = word_mask[part].to(device) if words is not None else text.new_zeros(text.shape[0], 1)
            rows.append(head.similarity(text, word, mask, video_frames).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, frames.shape[0])


def evaluate_index(index_dir: str | Path, out: str | Path | None = None, *, text_chunk: int | None = None,
                   device: torch.device | str | None = None) -> dict[str, Any]:
    """The task's metrics from the stored embeddings; writes ``results.json``, ``sims.npz`` and ``retrieval.json``
    into ``out`` (default: the index folder). Returns results.json's content."""
    index_dir = Path(index_dir)
    index = read_index(index_dir)
    device = torch.device(device) if device is not None else default_device()
    cfg = index_config(index)
    task = create_task(cfg)
    head, _ = load_head(index, device)
    start = time.perf_counter()
    frames, valid = load_video_embeddings(index_dir, index)
    stored = load_captions(index_dir, index)
    words = torch.from_numpy(stored["words"]) if "words" in stored else None
    similarity = similarity_matrix(head, torch.from_numpy(stored["sentence"]), words,
                                   torch.from_numpy(stored["word_mask"]), frames,
                                   chunk=int(text_chunk or task.text_chunk), device=device,
                                   precision=cfg.solver.precision)
    captions = CaptionSet(videos=list(index["video_ids"]), captions=[str(t) for t in stored["texts"]],
                          caption_video=[int(v) for v in stored["caption_video"]], source=str(index_dir))
    evaluation = task.evaluation(similarity, captions, unreadable=int((~valid).sum()))
    results = {
        "task": task.name, **evaluation.metrics,
        **{key: value for key, value in evaluation.details.items() if key in ("text_to_video", "video_to_text")},
        "data": index["data"], "split": index["split"],
        "checkpoint": {key: index["checkpoint"][key] for key in ("path", "epoch", "format", "sha256")}
        | {"backbone": index["backbone"]},
        "index": str(index_dir.resolve()), "text_dtype": index["text_dtype"],
        "logit_scale": float(head.scale()), "evaluate_time_s": time.perf_counter() - start,
    }
    out_dir = Path(out) if out is not None else index_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", dump_json(results))
    task.write_evaluation(evaluation, out_dir)
    results["describe"] = task.describe(evaluation.metrics)
    return results


# -- command line ----------------------------------------------------------------------------------------------
COMMANDS = ("extract", "evaluate")


def _extract_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="side4video extract-retrieval [extract]",
                                     description="Video and caption embeddings of a retrieval checkpoint, in "
                                                 "resumable shards.",
                                     epilog="Resume an interrupted run with the same command.")
    add_config_arguments(parser, required=False)
    parser.add_argument("--weights", required=True, help="retrieval checkpoint; without --config its stored config "
                                                         "is used")
    parser.add_argument("--out", required=True, help="index folder (shards, captions.npz, index.json)")
    parser.add_argument("--split", choices=SPLITS, default="val",
                        help="val: the evaluation set test.py scores (default); train: the training captions' videos")
    parser.add_argument("--shard_size", type=positive_int, default=256, help="videos per shard file (default: 256; "
                        "a multiple of the batch size keeps test.py's batches)")
    parser.add_argument("--batch_size", type=positive_int, default=None,
                        help="videos per forward batch (default: data.batch_size)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: data.workers)")
    parser.add_argument("--text_dtype", choices=tuple(TEXT_DTYPES), default="float32",
                        help="stored dtype of the word embeddings (float16 halves captions.npz; scores then differ "
                             "slightly from test.py's)")
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda:0 (default: the first GPU, else the CPU)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="side4video extract-retrieval evaluate",
                                     description="Retrieval metrics of an extracted index (test.py's, without "
                                                 "running the towers).")
    parser.add_argument("--index", required=True, help="a complete index folder")
    parser.add_argument("--out", default=None, help="where results.json and sims.npz go (default: the index folder)")
    parser.add_argument("--text_chunk", type=positive_int, default=None,
                        help="captions scored at once (default: the task's text_chunk, as test.py)")
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda:0 (default: the first GPU, else the CPU)")
    return parser


def _run_extract(args: argparse.Namespace) -> int:
    cfg = config_for_checkpoint(args.weights, args.config, args.opts)
    index = extract_index(cfg, args.weights, args.out, split=args.split, shard_size=args.shard_size,
                          batch_size=args.batch_size, workers=args.workers, text_dtype=args.text_dtype,
                          device=args.device, progress=not args.no_progress)
    unreadable = (f"; {len(index['unreadable'])} unreadable (listed in index.json)" if index["unreadable"] else "")
    if index.get("already_complete"):
        print(f"{args.out} is already a complete index ({index['num_videos']} videos, {index['num_captions']} "
              f"captions){unreadable}; nothing to do")
        return 0
    rate = index["extracted_videos"] / max(index["seconds"], 1e-9)
    print(f"{index['num_videos']} videos ([{index['frames']}, {index['embed_dim']}] each, {index['num_shards']} "
          f"shard(s)), {index['num_captions']} captions -> {args.out}{unreadable}"
          + (f"; {index['extracted_videos']} videos extracted now, {rate:.2f} videos/s" if index["extracted_videos"]
             else ""))
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    results = evaluate_index(args.index, args.out, text_chunk=args.text_chunk, device=args.device)
    print(f"{results['describe']}  ({results['num_captions']} captions x {results['num_videos']} videos) -> "
          f"{Path(args.out or args.index) / 'results.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``extract`` (the default when the first argument is an option) or ``evaluate``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[1])
        return 0
    command = args.pop(0) if args and args[0] in COMMANDS else "extract"
    if args and not args[0].startswith("-"):
        print(f"error: unknown command {args[0]!r} (extract or evaluate)", file=sys.stderr)
        return 2
    if command == "evaluate":
        parsed = _evaluate_parser().parse_args(args)
        return run_command(lambda: _run_evaluate(parsed), code=2)
    parsed = _extract_parser().parse_args(args)
    return run_command(lambda: _run_extract(parsed), code=2)


if __name__ == "__main__":
    sys.exit(main())
