"""From annotated samples to written lists: where each sample lives under a frames or video root, its list line,
and the files every preparer writes (``<split>_<frames|videos>.txt``, ``missing_<split>.txt``, ``labels.csv``).

A sample that cannot be found is left out, counted and listed with the reason; it never stops the run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tqdm import tqdm

from ..data.lists import format_list_line
from ..errors import InputNotFoundError
from .listio import (
    completed_frames,
    count_frames,
    has_markers,
    has_whitespace,
    sanitize_rel,
    write_label_csv,
    write_lines,
)

SPLIT_PLACEHOLDER = "{split}"


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

    def for_split(self, split: str) -> Resolver:
        def fill(root: str | None) -> str | None:
            return str(root).replace(SPLIT_PLACEHOLDER, split) if root else root
        return Resolver(fill(self.frames_root), fill(self.video_root), self.tmpl, self.exts, self.min_frames)

    def check_root(self) -> None:
        root = self.frames_root or self.video_root
        if root and not Path(root).is_dir():
            raise InputNotFoundError(f"root folder {root} does not exist")

    # -- frames ------------------------------------------------------------------------------------
    def _frames(self, sample: Sample) -> tuple[str | None, str]:
        root = Path(self.frames_root)
        if self._markers is None:           # written by frame extraction: trust only finished folders
            self._markers = has_markers(root)
        reason = "frame folder not found"
        for cand in _with_sanitized(sample.candidates):
            if not (root / cand).is_dir():
                continue
            if has_whitespace(cand):
                reason = f"frame folder {cand!r} has whitespace in its path (rename it, e.g. spaces -> '_')"
                continue
            if self._markers:
                n = completed_frames(root, cand, self.tmpl)
                if n is None:
                    reason = f"frame folder {cand!r} is not finished (no valid .done marker): re-run extract_frames.py"
                    continue
            else:
                n = count_frames(root / cand, self.tmpl)
            if n < self.min_frames:
                reason = f"frame folder {cand!r} has {n} frame(s) named like {self.tmpl!r}"
                continue
            return format_list_line(cand, sample.label, n), ""
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
            return format_list_line(rel, sample.label), ""
        return None, reason

    def resolve(self, sample: Sample) -> tuple[str | None, str]:
        """Return ``(list_line, "")`` or ``(None, reason it is missing)``."""
        if self.mode == "frames":
            return self._frames(sample)
        if self.mode == "videos":
            return self._videos(sample)
        rel = sanitize_rel(sample.candidates[0]) + self.exts[0]
        return format_list_line(rel, sample.label), ""


def _with_sanitized(candidates: Iterable[str]) -> list[str]:
    """Each candidate, followed by its whitespace -> '_' version (how frame extraction names folders)."""
    out: list[str] = []
    for c in candidates:
        for v in (c, sanitize_rel(c)):
            if v not in out:
                out.append(v)
    return out


@dataclass
class SplitResult:
    """What one split's list holds: ``kept`` samples were found, ``missing`` were left out (see its report)."""
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
    else:
        missing_path.unlink(missing_ok=True)    # everything is found now: drop the report of an earlier run
    msg = f"{split}{suffix}: wrote {len(lines)} of {len(samples)} samples to {list_path}"
    if missing:
        msg += f"; {len(missing)} missing (see {missing_path})"
    print(msg)
    return SplitResult(split + suffix, list_path, len(lines), len(missing))


def write_lists(out_dir: str | os.PathLike, names: Sequence[str], splits: dict[str, Sequence[Sample]],
                resolver: Resolver, suffix: str = "") -> list[SplitResult]:
    """Write the label CSV and every split's list into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_label_csv(out_dir / "labels.csv", names)
    print(f"wrote {len(names)} classes to {out_dir / 'labels.csv'}")
    results = []
    for split, samples in splits.items():
        split_resolver = resolver.for_split(split)
        split_resolver.check_root()
        results.append(write_split(samples, split_resolver, out_dir, split, suffix))
    return results
