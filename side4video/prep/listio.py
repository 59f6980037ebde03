"""Reading and writing the small text files that dataset preparation deals with.

* TSN-style annotation lists, one sample per line, fields separated by single spaces (written through
  :func:`side4video.data.lists.format_list_line`, the one formatter of list lines):
  - frames list: ``relative_dir num_frames label`` (frames are 1-indexed files named by a template such as
    ``img_{:05d}.jpg``),
  - video list:  ``relative_path label``.
* label CSVs: a header line ``id,name`` followed by ``0,<name>``, ``1,<name>``, ... in id order.
* the official annotation files of each dataset (text, CSV, JSON), read with errors that name ``file:line``.
* the completion markers that frame extraction leaves under ``<frames_root>/.done/``.

Malformed input is a :class:`~side4video.errors.DataError` whose one-line message starts with ``file:line:``;
a missing input file is an :class:`~side4video.errors.InputNotFoundError`. Every file is written atomically
through :mod:`side4video.files`.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import string
from pathlib import Path
from typing import IO, Iterator, Sequence

from ..data.lists import TEXT_ENCODING, read_label_names
from ..errors import DataError, InputNotFoundError
from ..files import atomic_write_text

# Name of the hidden folder (directly under a frames root) that holds one ``<rel_dir>.done`` marker per
# completely extracted video. Markers live outside the frame folders on purpose: loaders that count frames
# with ``len(os.listdir(dir))`` (the reference Side4Video loader does) would otherwise count the marker too.
DONE_DIR = ".done"
DONE_SUFFIX = ".done"
# Scratch folder (directly under a frames root) where a video's frames are written before being renamed
# into place.
TMP_DIR = ".tmp"

_WHITESPACE = re.compile(r"\s")


def where(path: str | os.PathLike, lineno: int | None = None) -> str:
    """Return ``file:line`` (or just ``file``) for error messages."""
    return f"{path}:{lineno}" if lineno is not None else f"{path}"


def annotation_error(path: str | os.PathLike, lineno: int | None, msg: str) -> DataError:
    """A DataError whose message starts with ``file:line:``."""
    return DataError(f"{where(path, lineno)}: {msg}")


def open_annotation(path: str | os.PathLike, newline: str | None = None) -> IO[str]:
    """Open an annotation file for reading (a UTF-8 byte-order mark is dropped); a missing file is an
    InputNotFoundError, so the command line reports it in one line."""
    try:
        return open(path, encoding=TEXT_ENCODING, newline=newline)
    except (FileNotFoundError, NotADirectoryError):
        raise InputNotFoundError(f"annotation file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; expected an annotation file") from None


# --------------------------------------------------------------------------------------------------
# Relative paths
# --------------------------------------------------------------------------------------------------

def has_whitespace(text: str) -> bool:
    return bool(_WHITESPACE.search(text))


def sanitize_rel(rel: str) -> str:
    """Make a relative path usable in a space-separated list: '/' separators, whitespace -> '_'."""
    rel = rel.replace(os.sep, "/")
    return _WHITESPACE.sub("_", rel)


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
    Exactly one replacement field is allowed; anything else is a DataError (a ValueError).
    """
    parts = []
    n_fields = 0
    try:
        parsed = list(string.Formatter().parse(tmpl))
    except ValueError as e:
        raise DataError(f"frame template {tmpl!r}: {e}") from None
    for literal, field, _spec, _conv in parsed:
        parts.append(re.escape(literal))
        if field is not None:
            if field not in ("", "0"):
                raise DataError(f"frame template {tmpl!r}: use a positional field such as '{{:05d}}'")
            n_fields += 1
            parts.append(r"(\d+)")
    if n_fields != 1:
        raise DataError(f"frame template {tmpl!r} must contain exactly one '{{}}' field, e.g. 'img_{{:05d}}.jpg'")
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
    """Write the marker atomically, so a killed run never leaves half a marker."""
    atomic_write_text(marker_path(frames_root, rel_dir), f"{num_frames}\n")


def remove_marker(frames_root: str | os.PathLike, rel_dir: str) -> None:
    marker_path(frames_root, rel_dir).unlink(missing_ok=True)


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
    """True when ``frames_root`` was written by frame extraction (it has a ``.done`` folder)."""
    return (Path(frames_root) / DONE_DIR).is_dir()


# --------------------------------------------------------------------------------------------------
# Reading annotation files
# --------------------------------------------------------------------------------------------------

def iter_lines(path: str | os.PathLike, comments: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, stripped_line)`` for the non-blank lines of a text file (1-based numbers).

    With ``comments=True`` lines starting with '#' are skipped as well. A UTF-8 BOM is ignored.
    """
    with open_annotation(path) as f:
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
    with open_annotation(path) as f:
        text = f.read()
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
    with open_annotation(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise annotation_error(path, e.lineno, f"invalid JSON: {e.msg}") from None


# --------------------------------------------------------------------------------------------------
# Label CSVs
# --------------------------------------------------------------------------------------------------

def read_label_csv(path: str | os.PathLike) -> list[str]:
    """Class names of an ``id,name`` CSV, by id: the same reader training uses, so what these tools read and
    write is exactly what ``data.label_list`` accepts."""
    return read_label_names(str(path))


def write_label_csv(path: str | os.PathLike, names: Sequence[str]) -> None:
    """Write ``id,name`` rows (names containing commas or quotes are CSV-quoted), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name"])
    for i, name in enumerate(names):
        writer.writerow([i, name])
    atomic_write_text(path, buffer.getvalue())


def name_key(name: str) -> str:
    """Loose key for matching class names across files: case, '_' vs ' ', quotes and commas are ignored."""
    name = name.replace('"', "").replace(",", " ").replace("_", " ")
    return " ".join(name.lower().split())


def name_index(names: Sequence[str], source: str) -> dict[str, int]:
    """Map :func:`name_key` of each class name to its id; two names with the same key are a DataError."""
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        k = name_key(n)
        if k in index:
            raise DataError(f"{source}: classes {index[k]} and {i} have the same name {n!r}")
        index[k] = i
    return index


# --------------------------------------------------------------------------------------------------
# Writing lists
# --------------------------------------------------------------------------------------------------

def write_lines(path: str | os.PathLike, lines: Sequence[str]) -> None:
    """Write one line per entry, atomically (through :func:`side4video.files.atomic_write_text`)."""
    atomic_write_text(path, "".join(line + "\n" for line in lines))
