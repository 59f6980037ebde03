"""Write WebDataset tar shards from an annotation list, resumably: the ``shards`` command of ``side4video prep``::

    side4video prep shards lists/train.txt --root /data/frames --out /data/shards/train --shard_size 1000

Every readable entry of LIST (video files or frame folders, the TSN formats of ``side4video.data.lists``) becomes one
sample, in list order: ``KEY.json`` (``video_id`` = the listed path, ``index`` = its position in the list, ``line``,
``label``, ``num_frames``), ``KEY.cls`` (the label), ``KEY.txt`` (its caption, with ``--captions``) and the data: the
video file's bytes as they are (``KEY.mp4``, ``KEY.webm`` ...) or the frame folder's image files
(``KEY.frame00001.jpg`` ...). ``KEY`` is the list position and the video id with every character other than letters,
digits, '-' and '_' made '_' (a list may hold one video twice; WebDataset keys cannot hold dots). Shards are
``OUT/shard-000000.tar``, ``shard-000001.tar`` ... of ``--shard_size`` samples (the last one fewer), read by
``data.format: webdataset`` (``side4video.data.shards``).

``OUT/index.json``, the manifest, names the shards with their sample counts and byte sizes, the list they came from
(path and SHA-256), the settings, and the entries skipped with their reasons. It is rewritten (atomically) after
every finished shard, with ``"complete": false`` until the last one; readers refuse an incomplete manifest.

Resuming: each shard is written to a temporary name and renamed when complete, so a killed run leaves whole shards
and at most a temporary file (removed by the next run). Running the same command again keeps the manifest's shards
that are present with their recorded size and continues after the last of them (a missing shard is rewritten, and
the ones after it); on a complete output whose shards are all present it writes nothing. Another list or other
settings in the same OUT is an error unless ``--overwrite``.

Unreadable entries (a missing video or frame folder, a video its decoder cannot open, a missing frame file) are
skipped and reported: one line each on stderr and in the manifest's ``skipped``.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

from ..data.decoders import VIDEO_BACKENDS, FrameFolderReader, VideoReadError, open_reader
from ..data.lists import VideoRecord, read_annotation_list
from ..data.shards import FRAME_PREFIX, MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, require_webdataset
from ..errors import DataError, InputNotFoundError
from ..files import atomic_write, atomic_write_json, remove_stale_temporaries
from .base import Preparer, frame_template

SHARD_NAME = "shard-{:06d}.tar"
_SHARD_FILE = re.compile(r"^shard-\d{6}\.tar$")
_KEY_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ShardSummary:
    """What one run did: shards in OUT, samples in them, entries skipped, shards written now, the manifest."""

    shards: int
    samples: int
    skipped: int
    written: int
    manifest: Path


def sample_key(index: int, video_id: str) -> str:
    """A sample's tar key: its list position (unique) and its video id made safe (readable)."""
    return f"{index:08d}_{_KEY_CHARACTERS.sub('_', video_id).strip('_')[-80:]}"


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_sample(record: VideoRecord, index: int, root: str, *, image_tmpl: str, video_backend: str,
                caption: str | None = None) -> dict[str, Any]:
    """The tar members of one list entry (``__key__`` and suffix -> bytes); VideoReadError when it is unreadable
    (a video is opened by its decoder once, a frame folder's files must all be there; nothing is decoded)."""
    path = os.path.join(root, record.path)
    meta = {"video_id": record.path, "index": index, "line": record.line, "label": record.label,
            "num_frames": record.num_frames}
    members: dict[str, Any] = {"__key__": sample_key(index, record.path), "cls": str(record.label).encode()}
    if record.is_video:
        with open_reader(record, root, image_tmpl=image_tmpl, video_backend=video_backend) as reader:
            meta["decoded_frames"] = reader.num_frames
        with open(path, "rb") as handle:
            members[os.path.splitext(path)[1].lstrip(".").lower() or "video"] = handle.read()
    else:
        FrameFolderReader(path, record.num_frames or 0, image_tmpl)    # the folder and its last listed frame exist
        extension = os.path.splitext(image_tmpl)[1].lstrip(".").lower() or "img"
        for number in range(1, (record.num_frames or 0) + 1):
            name = image_tmpl.format(number)
            try:
                with open(os.path.join(path, name), "rb") as handle:
                    members[f"{FRAME_PREFIX}{number:05d}.{extension}"] = handle.read()
            except FileNotFoundError:
                raise VideoReadError(path, f"frame file {name} missing") from None
    if caption is not None:
        members["txt"] = caption.encode("utf-8")
    members["json"] = json.dumps(meta, sort_keys=True).encode("utf-8")
    return members


def _read_captions(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    if not os.path.isfile(path):
        raise InputNotFoundError(f"captions file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        try:
            captions = json.load(handle)
        except ValueError as error:
            raise DataError(f"{path}: not JSON ({error}); expected {{\"video_id\": \"caption\", ...}}") from None
    if not isinstance(captions, dict) or not all(isinstance(v, str) for v in captions.values()):
        raise DataError(f"{path}: expected a JSON object {{\"video_id\": \"caption\", ...}}")
    return captions


def _kept_shards(out: Path, manifest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The manifest's shards that are still there with their recorded size, up to the first one that is not."""
    kept = []
    for entry in (manifest or {}).get("shards", []):
        file = out / entry["name"]
        if not file.is_file() or file.stat().st_size != entry["bytes"]:
            break
        kept.append(entry)
    return kept


def write_shards(*, list_file: str, root: str, out: str, shard_size: int = 1000, tmpl: str = "img_{:05d}.jpg",
                 video_backend: str = "decord", captions: str | None = None, overwrite: bool = False) -> ShardSummary:
    """Write (or finish) the shards of ``list_file`` into ``out``; the keywords are the command's options."""
    wds = require_webdataset("side4video prep shards")
    if shard_size < 1:
        raise DataError(f"--shard_size must be positive, got {shard_size}")
    if not os.path.isdir(root):
        raise InputNotFoundError(f"--root directory not found: {root}")
    records = read_annotation_list(list_file)
    texts = _read_captions(captions)
    source = {"list": os.path.abspath(list_file), "list_sha256": _sha256(list_file), "root": os.path.abspath(root),
              "entries": len(records), "shard_size": shard_size, "image_tmpl": tmpl,
              "captions_sha256": _sha256(captions) if captions else None}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(out_dir):
        print(f"removed {stale.name}, left by a shard write that was killed", file=sys.stderr)
    manifest_path = out_dir / MANIFEST_NAME
    manifest: dict[str, Any] | None = None
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("source") != source:
            if not overwrite:
                changed = sorted(k for k in source if (manifest.get("source") or {}).get(k) != source[k])
                raise DataError(f"{out_dir} holds shards of another list or other settings ({', '.join(changed)} "
                                "differ); pass --overwrite to replace them, or write to another --out")
            manifest = None
    kept = _kept_shards(out_dir, manifest)
    if manifest is not None and manifest.get("complete") and len(kept) == len(manifest["shards"]):
        print(f"{out_dir}: {len(kept)} shards of {manifest['num_samples']} samples are complete; nothing to do")
        return ShardSummary(len(kept), int(manifest["num_samples"]), len(manifest.get("skipped", [])), 0,
                            manifest_path)
    for file in out_dir.iterdir():     # shards after the kept ones are rewritten (they start where those end)
        if _SHARD_FILE.match(file.name) and file.name not in {entry["name"] for entry in kept}:
            file.unlink()
    position = kept[-1]["next_entry"] if kept else 0
    skipped = [s for s in (manifest or {}).get("skipped", []) if s["position"] < position]
    shards = list(kept)
    if kept:
        print(f"{out_dir}: keeping {len(kept)} finished shards, continuing at list entry {position}")

    def manifest_now(complete: bool) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "complete": complete, "source": source,
                "kind": "videos" if records[0].is_video else "frames", "shard_pattern": SHARD_NAME,
                "num_samples": sum(entry["samples"] for entry in shards), "shards": shards, "skipped": skipped}

    def load(record: VideoRecord, index: int) -> dict[str, Any]:
        return load_sample(record, index, root, image_tmpl=tmpl, video_backend=video_backend,
                           caption=texts.get(record.path))

    written = 0
    while position < len(records):
        name = SHARD_NAME.format(len(shards))
        progress = {"position": position, "samples": 0}
        atomic_write(out_dir / name, functools.partial(_fill_shard, tar_writer=wds.TarWriter, records=records,
                                                       progress=progress, shard_size=shard_size, load=load,
                                                       skipped=skipped))
        if progress["samples"] == 0:      # only unreadable entries were left: no empty shard
            (out_dir / name).unlink(missing_ok=True)
            position = progress["position"]
            break
        shards.append({"name": name, "samples": progress["samples"], "bytes": (out_dir / name).stat().st_size,
                       "first_entry": position, "next_entry": progress["position"]})
        position = progress["position"]
        written += 1
        atomic_write_json(manifest_path, manifest_now(complete=position >= len(records)))
    final = manifest_now(complete=True)
    if final["num_samples"] == 0:
        raise DataError(f"{list_file}: none of its {len(records)} entries could be read (first: "
                        f"{skipped[0]['video_id']}: {skipped[0]['reason']}); no shards written")
    atomic_write_json(manifest_path, final)
    print(f"wrote {written} shards ({len(shards)} in all, {final['num_samples']} samples, {len(skipped)} skipped) "
          f"into {out_dir}")
    return ShardSummary(len(shards), final["num_samples"], len(skipped), written, manifest_path)


def _fill_shard(handle: BinaryIO, *, tar_writer: Any, records: Sequence[VideoRecord], progress: dict[str, int],
                shard_size: int, load: Callable[[VideoRecord, int], dict[str, Any]],
                skipped: list[dict[str, Any]]) -> None:
    """Write list entries from ``progress["position"]`` on into one tar until it holds ``shard_size`` samples or the
    list ends; unreadable entries are reported and recorded in ``skipped``; ``progress`` is advanced."""
    # mtime 0: the same list gives byte-identical shards, whichever run wrote them
    writer = tar_writer(handle, encoder=False, mtime=0.0)
    try:
        while progress["position"] < len(records) and progress["samples"] < shard_size:
            index = progress["position"]
            record = records[index]
            progress["position"] += 1
            try:
                members = load(record, index)
            except VideoReadError as error:
                skipped.append({"position": index, "line": record.line, "video_id": record.path,
                                "reason": error.reason})
                print(f"skipped {record.path} (line {record.line}): {error.reason}", file=sys.stderr)
                continue
            writer.write(members)
            progress["samples"] += 1
    finally:     # also when interrupted: the tar stream flushes into the temporary file now, not at garbage collection
        writer.close()


class ShardWriting(Preparer):
    """The ``shards`` command. Not a registered list builder: it packs what the lists name into shards."""

    summary = "pack an annotation list's videos or frame folders into WebDataset tar shards (resumable)"
    description = ("Pack an annotation list's videos (as they are) or frame folders (their images) and labels into "
                   "WebDataset tar shards shard-000000.tar ... with an index.json manifest, for data.format: "
                   "webdataset. Rerunning the command finishes an interrupted run.")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("list_file", metavar="LIST", help="annotation list (TSN format: videos or frame folders)")
        parser.add_argument("--root", required=True, help="root that the list's paths are relative to")
        parser.add_argument("--out", required=True, help="folder of the shards and index.json")
        parser.add_argument("--shard_size", type=int, default=1000, help="samples per shard")
        parser.add_argument("--tmpl", type=frame_template, default="img_{:05d}.jpg",
                            help="frame file name template of frame-folder lists (1-indexed)")
        parser.add_argument("--video_backend", choices=VIDEO_BACKENDS, default="decord",
                            help="decoder that checks each video opens (videos are stored as they are)")
        parser.add_argument("--captions", default=None,
                            help="JSON object {video_id: caption}: stored as each sample's txt member")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace shards of another list or other settings in --out")

    @classmethod
    def argument_problem(cls, options: argparse.Namespace) -> str | None:
        if options.shard_size < 1:
            return "--shard_size must be >= 1"
        return None

    build = staticmethod(write_shards)


__all__ = ["SHARD_NAME", "ShardSummary", "ShardWriting", "load_sample", "sample_key", "write_shards"]
