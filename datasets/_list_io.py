"""Helpers shared by ``extract_frames.py`` and ``build_lists.py``.

Everything here reads or writes the small text files the toolkit trains from:

* TSN-style annotation lists, one sample per line, fields separated by single spaces:
  - frames list: ``relative_dir num_frames label`` (frames are 1-indexed files named by a template
    such as ``img_{:05d}.jpg``),
  - video list:  ``relative_path label``.
  Because the fields are space-separated, a relative path must never contain whitespace.
* label CSVs: a header line ``id,name`` followed by ``0,<name>``, ``1,<name>``, ... in id order.
* the completion markers that ``extract_frames.py`` leaves under ``<frames_root>/.done/``.

The module is imported by the two scripts (which put this folder on ``sys.path``) and by the tests.
It depends on the standard library, and on side4video's own label-CSV reader.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import string
from pathlib import Path
from typing import Iterator, Sequence

# Name of the hidden folder (directly under a frames root) that holds one ``<rel_dir>.done`` marker per
# completely extracted video.  Markers live outside the frame folders on purpose: loaders that count frames
# with ``len(os.listdir(dir))`` (the reference Side4Video loader does) would otherwise count the marker too.
DONE_DIR = ".done"
DONE_SUFFIX = ".done"
# Scratch folder (directly under a frames root) where a video's frames are written before being renamed
# into place.
TMP_DIR = ".tmp"

_WS = re.compile(r"\s")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: ...)' only for options whose default means something (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


class AnnotationError(ValueError):
    """A malformed annotation or label file.  The message starts with ``<file>:<line>:``."""


def where(path: str | os.PathLike, lineno: int | None = None) -> str:
    """Return ``file:line`` (or just ``file``) for error messages."""
    return f"{path}:{lineno}" if lineno is not None else f"{path}"


def annotation_error(path: str | os.PathLike, lineno: int | None, msg: str) -> AnnotationError:
    return AnnotationError(f"{where(path, lineno)}: {msg}")


# --------------------------------------------------------------------------------------------------
# Relative paths
# --------------------------------------------------------------------------------------------------

def has_whitespace(text: str) -> bool:
    return bool(_WS.search(text))


def sanitize_rel(rel: str) -> str:
    """Make a relative path usable in a space-separated list: '/' separators, whitespace -> '_'."""
    rel = rel.replace(os.sep, "/")
    return _WS.sub("_", rel)


def strip_ext(rel: str) -> str:
    """``a/b/video.mp4`` -> ``a/b/video`` (only the last suffix is removed)."""
    root, _ = os.path.splitext(rel)
    return root


# --------------------------------------------------------------------------------------------------
# Frame templates and counting
# --------------------------------------------------------------------------------------------------

def template_regex(tmpl: str) -> re.Pattern:
    """Compile a regex matching the file names produced by ``tmpl.format(i)``.

    ``img_{:05d}.jpg`` matches ``img_00001.jpg`` but also ``img_123456.jpg`` (format widths are minimums).
    Exactly one replacement field is allowed.
    """
    parts = []
    n_fields = 0
    for literal, field, _spec, _conv in string.Formatter().parse(tmpl):
        parts.append(re.escape(literal))
        if field is not None:
            if field not in ("", "0"):
                raise ValueError(f"frame template {tmpl!r}: use a positional field such as '{{:05d}}'")
            n_fields += 1
            parts.append(r"(\d+)")
    if n_fields != 1:
        raise ValueError(f"frame template {tmpl!r} must contain exactly one '{{}}' field, e.g. 'img_{{:05d}}.jpg'")
    return re.compile("^" + "".join(parts) + "$")


def count_frames(frame_dir: str | os.PathLike, tmpl: str) -> int:
    """Number of files in ``frame_dir`` whose names match the frame template (0 if the folder is missing)."""
    rx = template_regex(tmpl)
    try:
        with os.scandir(frame_dir) as it:
            return sum(1 for e in it if rx.match(e.name) and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return 0


def marker_path(frames_root: str | os.PathLike, rel_dir: str) -> Path:
    """Where the completion marker of ``<frames_root>/<rel_dir>`` lives."""
    return Path(frames_root) / DONE_DIR / (rel_dir + DONE_SUFFIX)


def read_marker(frames_root: str | os.PathLike, rel_dir: str) -> int | None:
    """Frame count recorded in the marker, or None when there is no (readable) marker."""
    try:
        text = marker_path(frames_root, rel_dir).read_text().strip()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_marker(frames_root: str | os.PathLike, rel_dir: str, num_frames: int) -> None:
    """Write the marker atomically (temp file + rename), so a killed run never leaves half a marker."""
    path = marker_path(frames_root, rel_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(f"{num_frames}\n")
    os.replace(tmp, path)


def remove_marker(frames_root: str | os.PathLike, rel_dir: str) -> None:
    try:
        marker_path(frames_root, rel_dir).unlink()
    except FileNotFoundError:
        pass


def completed_frames(frames_root: str | os.PathLike, rel_dir: str, tmpl: str) -> int | None:
    """Frame count of a completely extracted folder, else None.

    Complete means: a marker exists, the folder exists, and it holds exactly the recorded number of frames
    named by ``tmpl`` (so a folder emptied by hand, or extracted with another template, counts as incomplete).
    """
    expected = read_marker(frames_root, rel_dir)
    if expected is None or expected <= 0:
        return None
    if count_frames(Path(frames_root) / rel_dir, tmpl) != expected:
        return None
    return expected


def has_markers(frames_root: str | os.PathLike) -> bool:
    """True when ``frames_root`` was written by extract_frames.py (it has a ``.done`` folder)."""
    return (Path(frames_root) / DONE_DIR).is_dir()


# --------------------------------------------------------------------------------------------------
# Reading annotation files
# --------------------------------------------------------------------------------------------------

def iter_lines(path: str | os.PathLike, comments: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, stripped_line)`` for the non-blank lines of a text file (1-based numbers).

    With ``comments=True`` lines starting with '#' are skipped as well.  A UTF-8 BOM is ignored.
    """
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text or (comments and text.startswith("#")):
                continue
            yield lineno, text


def iter_json_array(path: str | os.PathLike) -> Iterator[tuple[int, object]]:
    """Yield ``(line_number, element)`` for each element of a top-level JSON array.

    ``json.load`` loses positions; decoding element by element keeps the line where each one starts, so a
    malformed entry can be reported as ``file:line``.
    """
    text = Path(path).read_text(encoding="utf-8-sig")
    dec = json.JSONDecoder()
    ws = re.compile(r"\s*")

    def skip(pos: int) -> int:
        return ws.match(text, pos).end()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    pos = skip(0)
    if pos >= len(text) or text[pos] != "[":
        raise annotation_error(path, line_of(pos), "expected a JSON array ('[' ... ']')")
    pos = skip(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise annotation_error(path, e.lineno, f"invalid JSON: {e.msg}") from None
        yield line_of(pos), obj
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return
        raise annotation_error(path, line_of(pos), "expected ',' or ']' after an array element")


def load_json(path: str | os.PathLike) -> object:
    """``json.load`` with errors reported as ``file:line``."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise annotation_error(path, e.lineno, f"invalid JSON: {e.msg}") from None


# --------------------------------------------------------------------------------------------------
# Label CSVs
# --------------------------------------------------------------------------------------------------

def read_label_csv(path: str | os.PathLike) -> list[str]:
    """Class names of an ``id,name`` CSV, by id: the same reader training uses, so what these tools read and
    write is exactly what ``data.label_list`` accepts."""
    from side4video.data.lists import read_label_names
    return read_label_names(str(path))


def write_label_csv(path: str | os.PathLike, names: Sequence[str]) -> None:
    """Write ``id,name`` rows (names containing commas or quotes are CSV-quoted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "name"])
        for i, name in enumerate(names):
            w.writerow([i, name])
    os.replace(tmp, path)


def name_key(name: str) -> str:
    """Loose key for matching class names across files: case, '_' vs ' ', quotes and commas are ignored."""
    name = name.replace('"', "").replace(",", " ").replace("_", " ")
    return " ".join(name.lower().split())


def name_index(names: Sequence[str], source: str) -> dict[str, int]:
    """Map :func:`name_key` of each class name to its id; two names with the same key are an error."""
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        k = name_key(n)
        if k in index:
            raise AnnotationError(f"{source}: classes {index[k]} and {i} have the same name {n!r}")
        index[k] = i
    return index


# --------------------------------------------------------------------------------------------------
# Writing annotation lists
# --------------------------------------------------------------------------------------------------

def frames_line(rel_dir: str, num_frames: int, label: int) -> str:
    if has_whitespace(rel_dir):
        raise ValueError(f"path {rel_dir!r} contains whitespace, which a space-separated list cannot hold")
    return f"{rel_dir} {int(num_frames)} {int(label)}"


def video_line(rel_path: str, label: int) -> str:
    if has_whitespace(rel_path):
        raise ValueError(f"path {rel_path!r} contains whitespace, which a space-separated list cannot hold")
    return f"{rel_path} {int(label)}"


def write_lines(path: str | os.PathLike, lines: Sequence[str]) -> None:
    """Write one line per entry, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)
