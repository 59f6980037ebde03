#!/usr/bin/env python
"""Build TSN-style train/val annotation lists and the label CSV from official dataset annotations.

    python datasets/build_lists.py {kinetics,sthv1,sthv2,ucf101,hmdb51} [options]

Every sub-command writes, into ``--out_dir``:

* ``train_frames.txt`` / ``val_frames.txt`` (``rel_dir num_frames label``) when ``--frames_root`` is given:
  ``num_frames`` is counted in ``<frames_root>/<rel_dir>`` (files named by ``--tmpl``); or
* ``train_videos.txt`` / ``val_videos.txt`` (``rel_path label``) otherwise; with ``--video_root`` every
  video is checked to exist;
* ``labels.csv`` (``id,name``);
* ``missing_train.txt`` / ``missing_val.txt`` listing samples that were left out and why (video or frame
  folder not found, unfinished extraction, whitespace in the path).  Missing samples are counted and
  reported, never fatal.

UCF101 and HMDB51 lists carry the split number: ``train_split1_frames.txt``, ``val_split1_frames.txt``
(val = the official test list of that split).

A root may contain ``{split}``, replaced by ``train`` or ``val``, when the two splits live in different
folders (for example ``--video_root /data/k400/{split}``).

Malformed annotation input stops the run with an error naming the file and line.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _list_io import (  # noqa: E402  (import after the sys.path tweak)
    AnnotationError,
    HelpFormatter,
    annotation_error,
    completed_frames,
    count_frames,
    frames_line,
    has_markers,
    has_whitespace,
    iter_json_array,
    iter_lines,
    load_json,
    name_index,
    name_key,
    read_label_csv,
    sanitize_rel,
    template_regex,
    video_line,
    write_label_csv,
    write_lines,
)

from tqdm import tqdm  # noqa: E402

LABELS_DIR = Path(__file__).resolve().parent / "labels"
STH_LABELS = LABELS_DIR / "sth_labels.csv"


# --------------------------------------------------------------------------------------------------
# Resolving samples against a frames root or a video root
# --------------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """One annotated video: its label and the relative locations it may have on disk, most likely first.

    ``candidates`` are paths without extension (``class/video``); a video is looked for with each of the
    resolver's extensions appended, a frame folder as is.
    """
    key: str                 # how the sample is named in reports (e.g. the annotation id)
    label: int
    candidates: list[str]


@dataclass
class Resolver:
    """Finds where a sample lives and formats its list line.

    Modes: ``frames`` (a frames root is given), ``videos`` (a video root is given), ``plain`` (neither:
    video list with the first candidate and the first extension, unchecked).
    """
    frames_root: str | None = None
    video_root: str | None = None
    tmpl: str = "img_{:05d}.jpg"
    exts: tuple[str, ...] = (".mp4",)
    min_frames: int = 1
    _video_index: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    _markers: bool | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return "frames" if self.frames_root else "videos" if self.video_root else "plain"

    def for_split(self, split: str) -> "Resolver":
        fmt = (lambda r: r.replace("{split}", split) if r else r)
        return Resolver(fmt(self.frames_root), fmt(self.video_root), self.tmpl, self.exts, self.min_frames)

    def check_root(self) -> None:
        root = self.frames_root or self.video_root
        if root and not Path(root).is_dir():
            raise FileNotFoundError(f"root folder {root} does not exist")

    # -- frames ------------------------------------------------------------------------------------
    def _frames(self, sample: Sample) -> tuple[str | None, str]:
        root = Path(self.frames_root)
        if self._markers is None:           # written by extract_frames.py: trust only finished folders
            self._markers = has_markers(root)
        markers = self._markers
        reason = "frame folder not found"
        for cand in _with_sanitized(sample.candidates):
            if not (root / cand).is_dir():
                continue
            if has_whitespace(cand):
                reason = f"frame folder {cand!r} has whitespace in its path (rename it, e.g. spaces -> '_')"
                continue
            if markers:
                n = completed_frames(root, cand, self.tmpl)
                if n is None:
                    reason = f"frame folder {cand!r} is not finished (no valid .done marker): re-run extract_frames.py"
                    continue
            else:
                n = count_frames(root / cand, self.tmpl)
            if n < self.min_frames:
                reason = f"frame folder {cand!r} has {n} frame(s) named like {self.tmpl!r}"
                continue
            return frames_line(cand, n, sample.label), ""
        return None, reason

    # -- videos ------------------------------------------------------------------------------------
    def _index_folder(self, rel_dir: str) -> dict[str, str]:
        """Map 'name without extension' -> 'file name' for the videos in one folder (cached)."""
        if rel_dir not in self._video_index:
            entries: dict[str, str] = {}
            try:
                with os.scandir(Path(self.video_root) / rel_dir) as it:
                    for e in it:
                        stem, ext = os.path.splitext(e.name)
                        if ext.lower() in self.exts and e.is_file():
                            # prefer the extension listed first when a video exists in several containers
                            old = entries.get(stem)
                            if old is None or self.exts.index(ext.lower()) < self.exts.index(
                                    os.path.splitext(old)[1].lower()):
                                entries[stem] = e.name
            except (FileNotFoundError, NotADirectoryError):
                pass
            self._video_index[rel_dir] = entries
        return self._video_index[rel_dir]

    def _videos(self, sample: Sample) -> tuple[str | None, str]:
        reason = "video not found"
        for cand in _with_sanitized(sample.candidates):
            folder, _, stem = cand.rpartition("/")
            name = self._index_folder(folder).get(stem)
            if name is None:
                continue
            rel = f"{folder}/{name}" if folder else name
            if has_whitespace(rel):
                reason = f"video {rel!r} has whitespace in its path (rename it, e.g. spaces -> '_')"
                continue
            return video_line(rel, sample.label), ""
        return None, reason

    def resolve(self, sample: Sample) -> tuple[str | None, str]:
        """Return ``(list_line, "")`` or ``(None, reason it is missing)``."""
        if self.mode == "frames":
            return self._frames(sample)
        if self.mode == "videos":
            return self._videos(sample)
        rel = sanitize_rel(sample.candidates[0]) + self.exts[0]
        return video_line(rel, sample.label), ""


def _with_sanitized(candidates: Iterable[str]) -> list[str]:
    """Each candidate, followed by its whitespace -> '_' version (how extract_frames.py names folders)."""
    out: list[str] = []
    for c in candidates:
        for v in (c, sanitize_rel(c)):
            if v not in out:
                out.append(v)
    return out


@dataclass
class SplitResult:
    split: str
    list_path: Path
    kept: int
    missing: int


def write_split(samples: Sequence[Sample], resolver: Resolver, out_dir: Path, split: str,
                suffix: str = "") -> SplitResult:
    """Resolve every sample, write ``<split><suffix>_<frames|videos>.txt`` and ``missing_<split><suffix>.txt``."""
    kind = "frames" if resolver.mode == "frames" else "videos"
    lines, missing = [], []
    for s in tqdm(samples, desc=f"{split}{suffix}", unit="video", dynamic_ncols=True):
        line, reason = resolver.resolve(s)
        if line is None:
            missing.append(f"{s.key}\t{reason}")
        else:
            lines.append(line)
    list_path = out_dir / f"{split}{suffix}_{kind}.txt"
    write_lines(list_path, lines)
    missing_path = out_dir / f"missing_{split}{suffix}.txt"
    if missing:
        write_lines(missing_path, missing)
    elif missing_path.exists():
        missing_path.unlink()
    msg = f"{split}{suffix}: wrote {len(lines)} of {len(samples)} samples to {list_path}"
    if missing:
        msg += f"; {len(missing)} missing (see {missing_path})"
    print(msg)
    return SplitResult(split + suffix, list_path, len(lines), len(missing))


def finish(out_dir: Path, names: Sequence[str], splits: dict[str, Sequence[Sample]], resolver: Resolver,
           suffix: str = "") -> list[SplitResult]:
    """Write the label CSV and every split's list."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_label_csv(out_dir / "labels.csv", names)
    print(f"wrote {len(names)} classes to {out_dir / 'labels.csv'}")
    results = []
    for split, samples in splits.items():
        r = resolver.for_split(split)
        r.check_root()
        results.append(write_split(samples, r, out_dir, split, suffix))
    return results


# --------------------------------------------------------------------------------------------------
# Kinetics (400 / 600 / 700)
# --------------------------------------------------------------------------------------------------

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def read_kinetics_csv(path: str | os.PathLike) -> list[tuple[int, str, str, str]]:
    """Rows of an official Kinetics CSV as ``(line, label_name, youtube_id, clip_name)``.

    Columns: ``label,youtube_id,time_start,time_end,split[,is_cc]``; the clip name is
    ``{youtube_id}_{time_start:06d}_{time_end:06d}`` as the common downloaders save it.
    """
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = None
        for row in reader:
            lineno = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                miss = [c for c in KINETICS_COLUMNS if c not in header]
                if miss:
                    raise annotation_error(path, lineno, f"header lacks column(s) {', '.join(miss)}: expected "
                                           "'label,youtube_id,time_start,time_end,split[,is_cc]'")
                col = {c: header.index(c) for c in KINETICS_COLUMNS}
                continue
            if len(row) != len(header):
                raise annotation_error(path, lineno, f"expected {len(header)} fields like the header, got {len(row)}")
            label = row[col["label"]].strip().strip('"')
            yid = row[col["youtube_id"]].strip()
            if not label or not yid:
                raise annotation_error(path, lineno, "empty label or youtube_id")
            try:
                start = int(float(row[col["time_start"]]))
                end = int(float(row[col["time_end"]]))
            except ValueError:
                raise annotation_error(path, lineno, f"time_start/time_end must be numbers, got "
                                       f"{row[col['time_start']]!r}, {row[col['time_end']]!r}") from None
            rows.append((lineno, label, yid, f"{yid}_{start:06d}_{end:06d}"))
    if header is None:
        raise annotation_error(path, None, "empty annotation file")
    return rows


def build_kinetics(train_csv: str, val_csv: str, out_dir: str, labels: str | None = None,
                   video_root: str | None = None, frames_root: str | None = None, layout: str = "auto",
                   tmpl: str = "img_{:05d}.jpg", exts: Sequence[str] = (".mp4", ".mkv", ".webm"),
                   min_frames: int = 1) -> list[SplitResult]:
    """Kinetics lists.

    ``layout`` says where a clip is, relative to the root: 'class' = ``{label}/{clip}``, 'flat' = ``{clip}``,
    'id' = ``{youtube_id}`` (how the reference's K400 validation frames are named), 'auto' = the first of
    these three that exists.  ``{clip}`` is ``{youtube_id}_{time_start:06d}_{time_end:06d}``.
    """
    rows = {"train": read_kinetics_csv(train_csv), "val": read_kinetics_csv(val_csv)}
    csv_paths = {"train": train_csv, "val": val_csv}
    if labels:
        names = read_label_csv(labels)
    else:  # the usual convention: class ids = sorted class names of the training set
        names = sorted({label for _, label, _, _ in rows["train"]})
    index = name_index(names, str(labels or train_csv))

    splits: dict[str, list[Sample]] = {}
    for split, split_rows in rows.items():
        samples = []
        for lineno, label, yid, clip in split_rows:
            idx = index.get(name_key(label))
            if idx is None:
                raise annotation_error(csv_paths[split], lineno,
                                       f"class {label!r} is not in {labels or 'the training classes'}")
            cands = {"class": [f"{label}/{clip}"], "flat": [clip], "id": [yid],
                     "auto": [f"{label}/{clip}", clip, yid]}[layout]
            samples.append(Sample(key=f"{label}/{clip}", label=idx, candidates=cands))
        splits[split] = samples
    resolver = Resolver(frames_root, video_root, tmpl, tuple(exts), min_frames)
    return finish(Path(out_dir), names, splits, resolver)


# --------------------------------------------------------------------------------------------------
# Something-Something v1 and v2
# --------------------------------------------------------------------------------------------------

def sth_csv_name(name: str) -> str:
    """Class name as written in label CSVs: Side4Video's ``sth_labels.csv`` drops the commas of the
    official names ("Removing something, revealing ..." -> "Removing something revealing ...")."""
    return " ".join(name.replace(",", " ").split())


def compare_with_sth_labels(names: Sequence[str], what: str) -> bool:
    """Tell whether ``names`` (in id order) equal the shipped ``sth_labels.csv`` (SSv2 order)."""
    if not STH_LABELS.is_file():
        return False
    ref = read_label_csv(STH_LABELS)
    ours = [sth_csv_name(n) for n in names]
    if [name_key(n) for n in ours] == [name_key(n) for n in ref]:
        print(f"{what}: class order matches {STH_LABELS.name} (SSv2 order)")
        return True
    diff = next((i for i, (a, b) in enumerate(zip(ours, ref)) if name_key(a) != name_key(b)), min(len(ours), len(ref)))
    print(f"warning: {what}: class order differs from {STH_LABELS.name} from id {diff} "
          f"({ours[diff] if diff < len(ours) else '<end>'!r} vs {ref[diff] if diff < len(ref) else '<end>'!r}); "
          "lists from this run use the order written to labels.csv", file=sys.stderr)
    return False


def read_sthv1_labels(path: str | os.PathLike) -> list[str]:
    """SSv1 ``something-something-v1-labels.csv``: one class name per line; id = position after sorting."""
    names = []
    seen: dict[str, int] = {}
    for lineno, text in iter_lines(path):
        if ";" in text:
            raise annotation_error(path, lineno, "expected one class name per line, found ';' "
                                   "(is this a train/validation file?)")
        if text in seen:
            raise annotation_error(path, lineno, f"class {text!r} repeats line {seen[text]}")
        seen[text] = lineno
        names.append(text)
    if not names:
        raise annotation_error(path, None, "no class names")
    return sorted(names)      # plain code-point order, as TSM/TRN list generators do


def read_sthv1_split(path: str | os.PathLike, index: dict[str, int]) -> list[Sample]:
    """SSv1 ``something-something-v1-{train,validation}.csv``: ``id;label text`` per line."""
    samples = []
    for lineno, text in iter_lines(path):
        parts = text.split(";")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise annotation_error(path, lineno, f"expected 'id;label', got {text!r}")
        vid, label = parts[0].strip(), parts[1].strip()
        idx = index.get(name_key(label))
        if idx is None:
            raise annotation_error(path, lineno, f"label {label!r} is not in the label file")
        samples.append(Sample(key=vid, label=idx, candidates=[vid]))
    return samples


def build_sthv1(labels: str, train: str, val: str, out_dir: str, frames_root: str,
                tmpl: str = "{:05d}.jpg", min_frames: int = 1) -> list[SplitResult]:
    """SSv1 frames lists (``id num_frames label``): the dataset ships as JPEG folders ``<id>/00001.jpg``."""
    names = read_sthv1_labels(labels)
    index = name_index(names, labels)
    splits = {"train": read_sthv1_split(train, index), "val": read_sthv1_split(val, index)}
    compare_with_sth_labels(names, "SSv1 labels")
    resolver = Resolver(frames_root=frames_root, tmpl=tmpl, min_frames=min_frames)
    return finish(Path(out_dir), [sth_csv_name(n) for n in names], splits, resolver)


def read_sthv2_labels(path: str | os.PathLike) -> list[str]:
    """SSv2 ``labels.json``: ``{"<class name>": "<id>", ...}`` with ids 0..173."""
    data = load_json(path)
    if not isinstance(data, dict) or not data:
        raise annotation_error(path, 1, "expected a JSON object mapping class name -> id")
    by_id: dict[int, str] = {}
    for name, idx in data.items():
        try:
            i = int(idx)
        except (TypeError, ValueError):
            raise annotation_error(path, None, f"id of class {name!r} is not an integer: {idx!r}") from None
        if i in by_id:
            raise annotation_error(path, None, f"classes {by_id[i]!r} and {name!r} share id {i}")
        by_id[i] = name
    if sorted(by_id) != list(range(len(by_id))):
        raise annotation_error(path, None, f"class ids must be 0..{len(by_id) - 1} without gaps")
    return [by_id[i] for i in range(len(by_id))]


def read_sthv2_split(path: str | os.PathLike, index: dict[str, int]) -> list[Sample]:
    """SSv2 ``train.json`` / ``validation.json``: entries with ``id`` and ``template`` ("Putting [something]
    onto [something]"); the class is the template without its brackets."""
    samples = []
    for lineno, entry in iter_json_array(path):
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise annotation_error(path, lineno, "entry needs 'id' and 'template' keys")
        vid = str(entry["id"]).strip()
        template = str(entry["template"])
        name = template.replace("[", "").replace("]", "")
        idx = index.get(name_key(name))
        if not vid or idx is None:
            raise annotation_error(path, lineno, f"entry id={vid!r}: template {template!r} is not a class "
                                   "of labels.json" if vid else "empty 'id'")
        samples.append(Sample(key=vid, label=idx, candidates=[vid]))
    return samples


def build_sthv2(labels: str, train: str, val: str, out_dir: str, video_root: str | None = None,
                frames_root: str | None = None, tmpl: str = "{:06d}.jpg", exts: Sequence[str] = (".webm",),
                min_frames: int = 1) -> list[SplitResult]:
    """SSv2 lists: frames (``id num_frames label``) or videos (``id.webm label``)."""
    names = read_sthv2_labels(labels)
    index = name_index(names, labels)
    splits = {"train": read_sthv2_split(train, index), "val": read_sthv2_split(val, index)}
    compare_with_sth_labels(names, "SSv2 labels.json")
    resolver = Resolver(frames_root, video_root, tmpl, tuple(exts), min_frames)
    return finish(Path(out_dir), [sth_csv_name(n) for n in names], splits, resolver)


# --------------------------------------------------------------------------------------------------
# UCF101
# --------------------------------------------------------------------------------------------------

def read_ucf_classes(path: str | os.PathLike) -> list[str]:
    """``classInd.txt``: ``1 ApplyEyeMakeup`` ... (1-indexed); returns names by 0-based id."""
    names: list[str] = []
    for lineno, text in iter_lines(path):
        parts = text.split()
        if len(parts) != 2:
            raise annotation_error(path, lineno, f"expected 'index name', got {text!r}")
        try:
            idx = int(parts[0])
        except ValueError:
            raise annotation_error(path, lineno, f"class index {parts[0]!r} is not an integer") from None
        if idx != len(names) + 1:
            raise annotation_error(path, lineno, f"class index {idx} out of order: expected {len(names) + 1}")
        names.append(parts[1])
    if not names:
        raise annotation_error(path, None, "no classes")
    return names


def read_ucf_split(path: str | os.PathLike, names: Sequence[str], with_label: bool) -> list[Sample]:
    """``trainlist0N.txt`` (``Class/v_X.avi idx``) or ``testlist0N.txt`` (``Class/v_X.avi``)."""
    by_dir = {n.lower(): i for i, n in enumerate(names)}   # folder case differs for HandstandPushups files
    samples = []
    for lineno, text in iter_lines(path):
        parts = text.split()
        if len(parts) != (2 if with_label else 1):
            want = "'Class/video.avi index'" if with_label else "'Class/video.avi'"
            raise annotation_error(path, lineno, f"expected {want}, got {text!r}")
        rel = parts[0].replace("\\", "/")
        folder, _, fname = rel.rpartition("/")
        if not folder or not fname:
            raise annotation_error(path, lineno, f"expected 'Class/video.avi', got {rel!r}")
        dir_idx = by_dir.get(folder.lower())
        if with_label:
            try:
                idx = int(parts[1]) - 1
            except ValueError:
                raise annotation_error(path, lineno, f"class index {parts[1]!r} is not an integer") from None
            if not 0 <= idx < len(names):
                raise annotation_error(path, lineno, f"class index {idx + 1} outside 1..{len(names)}")
            if dir_idx is not None and dir_idx != idx:
                raise annotation_error(path, lineno, f"index {idx + 1} ({names[idx]}) disagrees with the "
                                       f"folder {folder!r}")
        else:
            if dir_idx is None:
                raise annotation_error(path, lineno, f"folder {folder!r} is not a class of classInd.txt")
            idx = dir_idx
        stem = os.path.splitext(rel)[0]
        samples.append(Sample(key=rel, label=idx, candidates=[stem]))
    return samples


def build_ucf101(splits_dir: str, split: int, out_dir: str, video_root: str | None = None,
                 frames_root: str | None = None, tmpl: str = "img_{:05d}.jpg", exts: Sequence[str] = (".avi",),
                 min_frames: int = 1) -> list[SplitResult]:
    d = Path(splits_dir)
    names = read_ucf_classes(d / "classInd.txt")
    splits = {"train": read_ucf_split(d / f"trainlist{split:02d}.txt", names, with_label=True),
              "val": read_ucf_split(d / f"testlist{split:02d}.txt", names, with_label=False)}
    resolver = Resolver(frames_root, video_root, tmpl, tuple(exts), min_frames)
    return finish(Path(out_dir), names, splits, resolver, suffix=f"_split{split}")


# --------------------------------------------------------------------------------------------------
# HMDB51
# --------------------------------------------------------------------------------------------------

def build_hmdb51(splits_dir: str, split: int, out_dir: str, video_root: str | None = None,
                 frames_root: str | None = None, tmpl: str = "img_{:05d}.jpg", exts: Sequence[str] = (".avi",),
                 min_frames: int = 1) -> list[SplitResult]:
    """HMDB51: one ``<class>_test_split<N>.txt`` per class with ``video.avi 0|1|2`` (1 train, 2 test,
    0 unused); class ids = sorted class names."""
    d = Path(splits_dir)
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in d.iterdir() if p.name.endswith(suffix))
    if not files:
        raise FileNotFoundError(f"no '*{suffix}' files in {d}")
    names = sorted(p.name[: -len(suffix)] for p in files)
    if len(names) != 51:
        print(f"warning: found {len(names)} classes in {d}, HMDB51 has 51", file=sys.stderr)
    splits: dict[str, list[Sample]] = {"train": [], "val": []}
    for i, name in enumerate(names):
        path = d / f"{name}{suffix}"
        for lineno, text in iter_lines(path):
            parts = text.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise annotation_error(path, lineno, f"expected 'video.avi 0|1|2', got {text!r}")
            if parts[1] == "0":
                continue
            stem = os.path.splitext(parts[0])[0]
            sample = Sample(key=f"{name}/{parts[0]}", label=i, candidates=[f"{name}/{stem}"])
            splits["train" if parts[1] == "1" else "val"].append(sample)
    resolver = Resolver(frames_root, video_root, tmpl, tuple(exts), min_frames)
    return finish(Path(out_dir), names, splits, resolver, suffix=f"_split{split}")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def _exts(text: str) -> tuple[str, ...]:
    exts = tuple("." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip())
    if not exts:
        raise argparse.ArgumentTypeError("give at least one extension, e.g. mp4")
    return exts


def _tmpl(text: str) -> str:
    try:
        template_regex(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _add_common(p: argparse.ArgumentParser, tmpl: str, exts: str, videos: bool = True) -> None:
    p.add_argument("--out_dir", required=True, help="where the lists and labels.csv are written")
    p.add_argument("--frames_root", default=None,
                   help="root of extracted frame folders: write frames lists, counting frames there")
    if videos:
        p.add_argument("--video_root", default=None,
                       help="root of the videos: write video lists, checking that each video exists "
                            "(without either root: unchecked video lists)")
        p.add_argument("--ext", type=_exts, default=exts,
                       help="video file extensions, the preferred first")
    p.add_argument("--tmpl", type=_tmpl, default=tmpl, help="frame file name template (1-indexed)")
    p.add_argument("--min_frames", type=int, default=1, help="frame folders with fewer frames count as missing")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    fmt = HelpFormatter
    p = argparse.ArgumentParser(description="Build train/val annotation lists and a label CSV.",
                                formatter_class=fmt)
    sub = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    k = sub.add_parser("kinetics", formatter_class=fmt, help="Kinetics-400/600/700 from the official CSVs",
                       description="Kinetics lists from the official CSVs (label,youtube_id,time_start,time_end,"
                                   "split[,is_cc]). Clips are named {youtube_id}_{start:06d}_{end:06d}.")
    k.add_argument("--train_csv", required=True)
    k.add_argument("--val_csv", required=True)
    k.add_argument("--labels", default=None,
                   help="'id,name' CSV fixing the class ids (default: sorted class names of --train_csv)")
    k.add_argument("--layout", choices=("auto", "class", "flat", "id"), default="auto",
                   help="where clips are: 'class' = {label}/{clip}, 'flat' = {clip}, 'id' = {youtube_id}, "
                        "'auto' = the first that exists (unchecked lists: 'class')")
    _add_common(k, "img_{:05d}.jpg", "mp4,mkv,webm")

    s1 = sub.add_parser("sthv1", formatter_class=fmt, help="Something-Something v1 (frames only)",
                        description="SSv1 frames lists; SSv1 is distributed as JPEG folders <id>/00001.jpg.")
    s1.add_argument("--labels", required=True, help="something-something-v1-labels.csv (one name per line)")
    s1.add_argument("--train", required=True, help="something-something-v1-train.csv ('id;label')")
    s1.add_argument("--val", required=True, help="something-something-v1-validation.csv ('id;label')")
    _add_common(s1, "{:05d}.jpg", "", videos=False)

    s2 = sub.add_parser("sthv2", formatter_class=fmt, help="Something-Something v2 from the JSON annotations",
                        description="SSv2 lists from labels.json, train.json and validation.json; videos are {id}.webm.")
    s2.add_argument("--labels", required=True, help="labels.json")
    s2.add_argument("--train", required=True, help="train.json")
    s2.add_argument("--val", required=True, help="validation.json")
    _add_common(s2, "{:06d}.jpg", "webm")

    u = sub.add_parser("ucf101", formatter_class=fmt, help="UCF101 from ucfTrainTestlist",
                       description="UCF101 lists from classInd.txt, trainlist0N.txt and testlist0N.txt.")
    u.add_argument("--splits_dir", required=True, help="the ucfTrainTestlist folder")
    u.add_argument("--split", type=int, choices=(1, 2, 3), default=1)
    _add_common(u, "img_{:05d}.jpg", "avi")

    h = sub.add_parser("hmdb51", formatter_class=fmt, help="HMDB51 from testTrainMulti_7030_splits",
                       description="HMDB51 lists from the per-class <class>_test_split<N>.txt files.")
    h.add_argument("--splits_dir", required=True, help="the testTrainMulti_7030_splits folder")
    h.add_argument("--split", type=int, choices=(1, 2, 3), default=1)
    _add_common(h, "img_{:05d}.jpg", "avi")

    args = p.parse_args(argv)
    if getattr(args, "frames_root", None) and getattr(args, "video_root", None):
        p.error("give --frames_root (frames lists) or --video_root (video lists), not both")
    if args.dataset == "sthv1" and not args.frames_root:
        p.error("sthv1 needs --frames_root: SSv1 comes as frame folders, num_frames is counted there")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        if a.dataset == "kinetics":
            build_kinetics(a.train_csv, a.val_csv, a.out_dir, a.labels, a.video_root, a.frames_root, a.layout,
                           a.tmpl, a.ext, a.min_frames)
        elif a.dataset == "sthv1":
            build_sthv1(a.labels, a.train, a.val, a.out_dir, a.frames_root, a.tmpl, a.min_frames)
        elif a.dataset == "sthv2":
            build_sthv2(a.labels, a.train, a.val, a.out_dir, a.video_root, a.frames_root, a.tmpl, a.ext,
                        a.min_frames)
        elif a.dataset == "ucf101":
            build_ucf101(a.splits_dir, a.split, a.out_dir, a.video_root, a.frames_root, a.tmpl, a.ext, a.min_frames)
        elif a.dataset == "hmdb51":
            build_hmdb51(a.splits_dir, a.split, a.out_dir, a.video_root, a.frames_root, a.tmpl, a.ext, a.min_frames)
    except (AnnotationError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
