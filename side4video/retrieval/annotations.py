"""Caption files of the retrieval datasets, read as the Side4Video / CLIP4Clip loaders read them.

Every reader returns :class:`CaptionSet`: the videos in the reference's order and the captions in the order its
loader enumerates them, each caption pointing at its video. Text→video evaluation ranks the videos for every
caption; video→text takes a video's best-ranked caption (the reference's multi-sentence rule), so the order and the
grouping of captions are what these readers must get right.

Formats (``data_path`` is the reference's argument of that name):

* MSR-VTT: ``MSRVTT_train.9k.csv`` (column ``video_id``) with ``MSRVTT_data.json`` (``sentences``: ``video_id``,
  ``caption``): every caption of every listed video, in the JSON's order (the reference's
  ``expand_msrvtt_sentences``); the test split ``MSRVTT_JSFUSION_test.csv`` (1k-A: columns ``video_id`` and
  ``sentence``, one caption per video).
* MSVD: ``{split}_list.txt`` (one video id per line) and ``raw-captions.pkl`` (video id → list of token lists, each
  caption the tokens joined by spaces). The pickle is read with :class:`PlainDataUnpickler`, which builds only plain
  containers, strings and numbers: a pickle that asks for anything else is refused, never executed.
* VATEX: ``vatex_data/{split}_list.txt`` and ``vatex_data/vatex_data.json`` (video id → ``{"enCap": [...]}``).
* DiDeMo: ``{split}_list.txt`` and ``{split}_data.json`` (a list of ``{"video", "description", "times"}``); a video's
  descriptions are joined into one paragraph (paragraph-to-video retrieval, as the reference).
* ActivityNet Captions: ``{train,val}_ids.json`` (video ids ``v_...``) and ``train.json`` / ``val_1.json`` (video id
  → ``{"sentences": [...]}``); a video's sentences are joined into one paragraph, as CLIP4Clip's loader does.
* The toolkit's own format for custom data: one JSON object per line, ``{"video": path, "captions": [...]}``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError, InputNotFoundError

TEXT_ENCODING = "utf-8-sig"  # lists written on Windows often start with a byte-order mark
SPLITS = ("train", "val", "test")


@dataclass
class CaptionSet:
    """Captions of one split: ``captions[i]`` describes ``videos[caption_video[i]]``.

    ``videos`` are ids (MSR-VTT, MSVD, ...) or paths (the JSON-lines format), in the order the videos are scored.
    """

    videos: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    caption_video: list[int] = field(default_factory=list)
    source: str = ""

    def add(self, video: str, captions: list[str]) -> None:
        """Append one video and its captions (a video without captions cannot be evaluated: refused)."""
        if not captions:
            raise DataError(f"{self.source}: video {video!r} has no caption")
        index = len(self.videos)
        self.videos.append(video)
        self.captions.extend(captions)
        self.caption_video.extend([index] * len(captions))

    @property
    def multi_caption(self) -> bool:
        """Whether some video has more than one caption (video→text then takes the best one)."""
        return len(self.captions) > len(self.videos)

    def captions_per_video(self) -> list[int]:
        counts = [0] * len(self.videos)
        for video in self.caption_video:
            counts[video] += 1
        return counts


# -- a restricted unpickler for caption pickles -------------------------------------------------------------
class PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only: dicts, lists, tuples, sets, strings, bytes, numbers, booleans and None.

    Those need no global lookup; any pickle that names a class or function (``os.system``, ``numpy`` arrays,
    ...) stops at :meth:`find_class` and is refused, so a crafted file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(f"refusing to unpickle {module}.{name}: caption pickles may hold only plain containers "
                        "and strings")


def load_plain_pickle(path: str | Path) -> Any:
    """A pickle of plain data (:class:`PlainDataUnpickler`); anything else is a one-line DataError naming the file."""
    path = Path(path)
    _require(path)
    try:
        with open(path, "rb") as handle:
            return PlainDataUnpickler(io.BufferedReader(handle)).load()
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DataError(f"{path}: not a readable pickle ({error})") from None


# -- small file helpers --------------------------------------------------------------------------------------
def _require(path: Path) -> None:
    if not path.is_file():
        raise InputNotFoundError(f"caption file not found: {path}")


def _read_json(path: Path) -> Any:
    _require(path)
    try:
        return json.loads(path.read_text(encoding=TEXT_ENCODING))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def _read_ids(path: Path) -> list[str]:
    """One id per line (blank lines ignored, surrounding spaces stripped)."""
    _require(path)
    return [line.strip() for line in path.read_text(encoding=TEXT_ENCODING).splitlines() if line.strip()]


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    _require(path)
    with open(path, encoding=TEXT_ENCODING, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: no column {', '.join(repr(c) for c in missing)} (columns: "
                            f"{', '.join(reader.fieldnames or [])})")
        return list(reader)


def _check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise DataError(f"split must be one of {', '.join(allowed)}, got {split!r}")


def _strip_extension(name: str) -> str:
    # DiDeMo lists and annotations name videos with their file extension (``123@456.m4v``); the reference keeps
    # what is before the first dot
    return name.split(".")[0]


# -- readers -------------------------------------------------------------------------------------------------
def read_msrvtt(csv_path: str | Path, json_path: str | Path | None = None) -> CaptionSet:
    """MSR-VTT: a training csv (``video_id``) with ``MSRVTT_data.json`` → every caption of the listed videos, in the
    JSON's order; or a test csv with a ``sentence`` column (1k-A) and no JSON → one caption per row."""
    csv_path = Path(csv_path)
    if json_path is None:
        rows = _read_csv(csv_path, ("video_id", "sentence"))
        result = CaptionSet(source=str(csv_path))
        for row in rows:
            result.add(row["video_id"], [row["sentence"]])
        return result
    rows = _read_csv(csv_path, ("video_id",))
    listed = [row["video_id"] for row in rows]
    data = _read_json(Path(json_path))
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise DataError(f"{json_path}: expected an object with a 'sentences' list (MSRVTT_data.json)")
    wanted = set(listed)
    captions: dict[str, list[str]] = {}
    order: list[str] = []
    for number, item in enumerate(data["sentences"]):
        try:
            video, caption = item["video_id"], item["caption"]
        except (TypeError, KeyError):
            raise DataError(f"{json_path}: sentences[{number}] needs 'video_id' and 'caption'") from None
        if video in wanted:
            if video not in captions:
                captions[video] = []
                order.append(video)
            captions[video].append(caption)
    missing = [video for video in listed if video not in captions]
    if missing:
        raise DataError(f"{csv_path}: {len(missing)} listed videos have no caption in {json_path} (first: "
                        f"{missing[0]})")
    result = CaptionSet(source=str(csv_path))
    for video in listed:  # the csv's order; each video's captions in the JSON's order
        result.add(video, captions[video])
    return result


def read_msvd(data_path: str | Path, split: str) -> CaptionSet:
    """MSVD: ``{split}_list.txt`` and ``raw-captions.pkl`` (video id → token lists)."""
    _check_split(split)
    data_path = Path(data_path)
    ids = _read_ids(data_path / f"{split}_list.txt")
    pickle_path = data_path / "raw-captions.pkl"
    captions = load_plain_pickle(pickle_path)
    if not isinstance(captions, dict):
        raise DataError(f"{pickle_path}: expected a dict of video id -> captions, got {type(captions).__name__}")
    result = CaptionSet(source=str(data_path / f"{split}_list.txt"))
    for video in ids:
        if video not in captions:
            raise DataError(f"{pickle_path}: no captions for video {video!r} of {split}_list.txt")
        result.add(video, [" ".join(tokens) if isinstance(tokens, (list, tuple)) else str(tokens)
                           for tokens in captions[video]])
    return result


def read_vatex(data_path: str | Path, split: str) -> CaptionSet:
    """VATEX: ``vatex_data/{split}_list.txt`` and ``vatex_data/vatex_data.json`` (English captions, ``enCap``)."""
    _check_split(split)
    folder = Path(data_path) / "vatex_data"
    ids = _read_ids(folder / f"{split}_list.txt")
    data = _read_json(folder / "vatex_data.json")
    result = CaptionSet(source=str(folder / f"{split}_list.txt"))
    for video in ids:
        entry = data.get(video) if isinstance(data, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("enCap"), list):
            raise DataError(f"{folder / 'vatex_data.json'}: no 'enCap' captions for video {video!r}")
        result.add(video, list(entry["enCap"]))
    return result


def read_didemo(data_path: str | Path, split: str) -> CaptionSet:
    """DiDeMo: ``{split}_list.txt`` and ``{split}_data.json``; each video's descriptions joined into one paragraph
    (in the JSON's order), videos in the order they first appear in the JSON, listed videos only."""
    _check_split(split)
    data_path = Path(data_path)
    listed = {_strip_extension(v) for v in _read_ids(data_path / f"{split}_list.txt")}
    json_path = data_path / f"{split}_data.json"
    items = _read_json(json_path)
    if not isinstance(items, list):
        raise DataError(f"{json_path}: expected a list of {{video, description, times}} objects")
    texts: dict[str, list[str]] = {}
    for number, item in enumerate(items):
        try:
            video, description = _strip_extension(item["video"]), item["description"]
        except (TypeError, KeyError):
            raise DataError(f"{json_path}: item {number} needs 'video' and 'description'") from None
        if video in listed:
            texts.setdefault(video, []).append(description)
    result = CaptionSet(source=str(json_path))
    for video, descriptions in texts.items():
        result.add(video, [" ".join(descriptions)])
    return result


def read_activitynet(data_path: str | Path, split: str) -> CaptionSet:
    """ActivityNet Captions: ``{split}_ids.json`` and ``train.json`` / ``val_1.json``; a video's sentences joined
    into one paragraph, the video named by its file name (the id without ``v_``). ``split``: ``train`` or ``val``
    (the reference evaluates on ``val_1``)."""
    _check_split(split, ("train", "val"))
    data_path = Path(data_path)
    ids = _read_json(data_path / f"{split}_ids.json")
    json_path = data_path / ("train.json" if split == "train" else "val_1.json")
    data = _read_json(json_path)
    if not isinstance(ids, list) or not isinstance(data, dict):
        raise DataError(f"{data_path}: expected a list of ids in {split}_ids.json and an object in {json_path.name}")
    result = CaptionSet(source=str(json_path))
    seen: set[str] = set()
    for video in ids:
        if video in seen:  # the reference skips a repeated id
            continue
        seen.add(video)
        entry = data.get(video)
        if not isinstance(entry, dict) or not isinstance(entry.get("sentences"), list):
            raise DataError(f"{json_path}: no 'sentences' for video {video!r}")
        # annotations name videos ``v_<YouTube id>``, the files are named by the YouTube id alone
        result.add(video[2:] if video.startswith("v_") else video, [" ".join(entry["sentences"])])
    return result


def read_caption_lines(path: str | Path) -> CaptionSet:
    """The toolkit's format: one JSON object per line, ``{"video": path, "captions": [str, ...]}``."""
    path = Path(path)
    _require(path)
    result = CaptionSet(source=str(path))
    with open(path, encoding=TEXT_ENCODING) as handle:
        for line_number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
            captions = item.get("captions") if isinstance(item, dict) else None
            if not isinstance(item, dict) or not isinstance(item.get("video"), str) or not isinstance(captions, list) \
                    or not all(isinstance(c, str) for c in captions):
                raise DataError(f"{path}:{line_number}: expected {{\"video\": path, \"captions\": [text, ...]}}")
            if not captions:
                raise DataError(f"{path}:{line_number}: video {item['video']!r} has no caption")
            result.add(item["video"], captions)
    if not result.videos:
        raise DataError(f"{path}: no videos")
    return result


#: dataset name → reader of (data_path, split); MSR-VTT takes csv files instead (see :func:`read_msrvtt`)
SPLIT_READERS: dict[str, Callable[[str | Path, str], CaptionSet]] = {
    "msvd": read_msvd, "vatex": read_vatex, "didemo": read_didemo, "activitynet": read_activitynet,
}


def video_location(root: str | Path, video: str, extensions: tuple[str, ...] = (".mp4", ".webm", ".avi", ".mkv",
                                                                                  ".m4v")) -> str:
    """Where ``video`` (an id) lives under ``root`` (the reference's ``features_path``): a frame folder named by the
    id, or a video file with one of ``extensions``; an absolute path is returned as it is."""
    if os.path.isabs(video):
        return video
    base = os.path.join(str(root), video)
    if os.path.isdir(base) or os.path.isfile(base):
        return base
    for extension in extensions:
        if os.path.isfile(base + extension):
            return base + extension
    raise InputNotFoundError(f"video {video!r} not found under {root} (neither a frame folder nor "
                             f"{'/'.join(extensions)})")


__all__ = ["CaptionSet", "PlainDataUnpickler", "load_plain_pickle", "read_msrvtt", "read_msvd", "read_vatex",
           "read_didemo", "read_activitynet", "read_caption_lines", "SPLIT_READERS", "video_location"]
