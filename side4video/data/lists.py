"""Annotation lists (TSN / Side4Video formats) and class-name CSVs.

Accepted list lines, one video per line, fields separated by whitespace:

* ``frame_dir num_frames label``   a folder of 1-indexed frame images;
* ``video_file label``             a video file; its frame count comes from the decoder;
* ``video_file num_frames label``  the same, the listed count is kept but not trusted.

A path is a video file when its extension is in ``VIDEO_EXTENSIONS``. Fields are split from the
right, so paths that contain spaces still parse. Blank lines are ignored; a UTF-8 byte-order mark and
CRLF line endings (lists saved by Windows editors) are accepted. One list holds one kind: mixing frame
folders and video files is an error. A video listed twice is kept twice (as the reference does), with one
warning per list naming the lines; a video listed with two different labels gets a warning of its own that
names both labels.

Lines are written by one formatter, :func:`format_list_line`, which the dataset preparers
(``side4video.prep``) share.

Errors: a missing file raises ``InputNotFoundError``; a malformed line, a label outside the classes, a
mixed or empty list raise ``DataError``; each message is one line starting with ``file:line``.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass

from ..errors import DataError, InputNotFoundError

logger = logging.getLogger("side4video")

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpeg", ".mpg", ".flv", ".wmv",
})

# "utf-8-sig" drops a leading byte-order mark (Notepad and Excel write one); plain "utf-8" would keep it as
# the first character of the first path, so that video would silently never be found.
TEXT_ENCODING = "utf-8-sig"

_WHITESPACE = re.compile(r"\s")
_LINE_BREAK = re.compile(r"[\r\n]")


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video.

    ``path`` is the path as listed (relative to the split's root; it doubles as the video id).
    ``num_frames`` is the listed count, or None when the line has none. ``line`` is the 1-based
    line number in the list, kept so later errors can point at the source.
    """

    path: str
    num_frames: int | None
    label: int
    is_video: bool
    line: int = 0


def is_video_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def parse_list_line(text: str, *, source: str = "<list>", line: int = 0) -> VideoRecord:
    """Parse one non-blank annotation line; raise DataError naming ``source:line`` if malformed."""
    where = f"{source}:{line}"
    expected = "expected '<frame_dir> <num_frames> <label>', '<video> <label>' or '<video> <num_frames> <label>'"
    head_and_label = text.rsplit(maxsplit=1)
    if len(head_and_label) != 2:
        raise DataError(f"{where}: {expected}, got {text!r}")
    head, label_text = head_and_label
    label = _parse_int(label_text)
    if label is None:
        raise DataError(f"{where}: label {label_text!r} is not an integer ({expected})")
    if label < 0:
        raise DataError(f"{where}: negative label {label}")

    # The field before the label is a frame count only if it is an integer and a path precedes it.
    path, num_frames = head, None
    path_and_count = head.rsplit(maxsplit=1)
    if len(path_and_count) == 2 and _parse_int(path_and_count[1]) is not None:
        path, num_frames = path_and_count[0], int(path_and_count[1])

    video = is_video_file(path)
    if not video and num_frames is None:
        raise DataError(
            f"{where}: frame-folder entry needs an integer frame count: '<frame_dir> <num_frames> <label>', "
            f"got {text!r} (video files are recognised by extension: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    if num_frames is not None and num_frames < 0:
        raise DataError(f"{where}: negative frame count {num_frames}")
    return VideoRecord(path=path, num_frames=num_frames, label=label, is_video=video, line=line)


def read_annotation_list(list_file: str, *, num_classes: int | None = None) -> list[VideoRecord]:
    """Read a TSN-style annotation list.

    Raises InputNotFoundError for a missing file and DataError (message ``file:line: ...``) for a
    malformed line, a label outside ``[0, num_classes)``, a list that mixes frame folders and video
    files, or a list without entries. Duplicate paths are kept and logged (:func:`warn_duplicates`).
    """
    if not os.path.isfile(list_file):
        raise InputNotFoundError(f"annotation list not found: {list_file}")
    records: list[VideoRecord] = []
    with open(list_file, encoding=TEXT_ENCODING) as handle:
        for line_number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            record = parse_list_line(text.strip(), source=list_file, line=line_number)
            if num_classes is not None and record.label >= num_classes:
                raise DataError(f"{list_file}:{line_number}: label {record.label} is outside "
                                 f"[0, {num_classes}) (num_classes={num_classes})")
            if records and record.is_video != records[0].is_video:
                kinds = {True: "a video file", False: "a frame folder"}
                raise DataError(
                    f"{list_file}:{line_number}: entry is {kinds[record.is_video]} but line {records[0].line} "
                    f"is {kinds[records[0].is_video]}; a list must hold only one kind")
            records.append(record)
    if not records:
        raise DataError(f"{list_file}:1: annotation list has no entries")
    warn_duplicates(records, list_file)
    return records


def find_duplicates(records: list[VideoRecord]) -> dict[str, list[int]]:
    """``{path: [line, line, ...]}`` for every path listed more than once, in order of first appearance."""
    lines: dict[str, list[int]] = {}
    for record in records:
        lines.setdefault(record.path, []).append(record.line)
    return {path: numbers for path, numbers in lines.items() if len(numbers) > 1}


def find_label_conflicts(records: list[VideoRecord]) -> dict[str, list[tuple[int, int]]]:
    """``{path: [(line, label), ...]}`` for every path listed with more than one label, in order of first
    appearance (every copy of such a path is included, not only the disagreeing ones)."""
    copies: dict[str, list[tuple[int, int]]] = {}
    for record in records:
        copies.setdefault(record.path, []).append((record.line, record.label))
    return {path: listed for path, listed in copies.items() if len({label for _, label in listed}) > 1}


@dataclass(frozen=True)
class DuplicateSummary:
    """What :func:`warn_duplicates` found in one list.

    ``duplicated_videos`` / ``extra_copies``: videos listed more than once with one label, and how many copies
    beyond the first they have. ``conflicting_videos``: videos listed with different labels (a different
    problem: one of the labels is wrong, so these are counted and warned about separately).
    """

    duplicated_videos: int = 0
    extra_copies: int = 0
    conflicting_videos: int = 0


def _lines_text(numbers: list[int], limit: int = 5) -> str:
    return ", ".join(str(n) for n in numbers[:limit]) + (", ..." if len(numbers) > limit else "")


def warn_duplicates(records: list[VideoRecord], source: str) -> DuplicateSummary:
    """Log a warning (logger ``side4video``) for videos listed more than once with one label, and a separate one
    for videos listed with different labels; returns both counts. Neither is an error: each copy stays an entry
    (sampled, evaluated) of its own, with the label of its own line."""
    duplicates = find_duplicates(records)
    conflicts = find_label_conflicts(records)
    plain = {path: numbers for path, numbers in duplicates.items() if path not in conflicts}
    extra = sum(len(numbers) - 1 for numbers in plain.values())
    if plain:
        path, numbers = next(iter(plain.items()))
        logger.warning("%s: %d duplicate entr%s (%d video%s listed more than once; each copy is kept), first: %r on "
                       "lines %s", source, extra, "y" if extra == 1 else "ies", len(plain),
                       "" if len(plain) == 1 else "s", path, _lines_text(numbers))
    if conflicts:
        path, listed = next(iter(conflicts.items()))
        labels: dict[int, list[int]] = {}
        for number, label in listed:
            labels.setdefault(label, []).append(number)
        shown = "; ".join(f"label {label} on line{'s' if len(numbers) > 1 else ''} {_lines_text(numbers)}"
                          for label, numbers in labels.items())
        logger.warning("%s: %d video%s listed with different labels (each copy is kept with the label of its "
                       "line; one of them is probably wrong), first: %r with %s", source, len(conflicts),
                       "" if len(conflicts) == 1 else "s", path, shown)
    return DuplicateSummary(duplicated_videos=len(plain), extra_copies=extra, conflicting_videos=len(conflicts))


def format_list_line(path: str, label: int, num_frames: int | None = None, *, allow_spaces: bool = False) -> str:
    """One list line: ``path label`` (a video) or ``path num_frames label`` (a frame folder, or a video with
    its count).

    A path with whitespace is refused (DataError): the lists are space-separated, and other TSN-style tools
    split on every space. ``allow_spaces`` writes back a path that was read from a list: this module's reader
    splits from the right, so inner spaces survive; line breaks and leading or trailing whitespace never do.
    """
    if allow_spaces:
        bad = bool(_LINE_BREAK.search(path)) or path != path.strip()
    else:
        bad = bool(_WHITESPACE.search(path))
    if bad or not path:
        raise DataError(f"path {path!r} {'is empty' if not path else 'contains whitespace'}, which a "
                        "space-separated list cannot hold")
    if num_frames is None:
        return f"{path} {int(label)}"
    return f"{path} {int(num_frames)} {int(label)}"


def format_record(record: VideoRecord) -> str:
    """The list line for ``record``, in the format it was read from."""
    return format_list_line(record.path, record.label, record.num_frames, allow_spaces=True)


def read_label_names(csv_file: str) -> list[str]:
    """Class names from a CSV of ``id,name`` rows (a header line is optional), ordered by id.

    Ids must be exactly 0..N-1; a name may itself contain commas.
    """
    if not os.path.isfile(csv_file):
        raise InputNotFoundError(f"label list not found: {csv_file}")
    names: dict[int, str] = {}
    with open(csv_file, encoding=TEXT_ENCODING, newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            class_id = _parse_int(row[0].strip())
            if class_id is None:
                if line_number == 1 and not names:
                    continue  # header, e.g. "id,name"
                raise DataError(f"{csv_file}:{line_number}: class id {row[0]!r} is not an integer")
            if len(row) < 2:
                raise DataError(f"{csv_file}:{line_number}: expected 'id,name', got {','.join(row)!r}")
            if class_id in names:
                raise DataError(f"{csv_file}:{line_number}: duplicate class id {class_id}")
            names[class_id] = ",".join(row[1:]).strip()
    if not names:
        raise DataError(f"{csv_file}:1: label list has no entries")
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names) + 1)) - set(names))
        raise DataError(f"{csv_file}: class ids must be 0..{len(names) - 1} without gaps; missing {missing[:10]}")
    return [names[i] for i in range(len(names))]
