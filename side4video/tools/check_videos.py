"""Find unreadable entries of an annotation list and write a list without them.

    python -m side4video.tools.check_videos LIST --root DIR [--image_tmpl TMPL] [--backend decord|pyav]
                                            [--workers N] [--out CLEAN_LIST] [--deep]

Video files are decoded completely. Frame folders must hold every listed frame file, their first and
last frames must decode, and every frame file gets a cheap structural check that reads only its first
and last bytes: not empty; a JPEG starts with the SOI marker (FF D8) and ends with the EOI marker (FF D9),
which a truncated JPEG lacks; a PNG starts with its signature and ends with its IEND chunk; other formats
must have headers PIL can verify. ``--deep`` also decodes every frame (slow; it finds damage between
intact markers). Each bad entry is printed with its reason. The clean list (default ``LIST.clean.txt``)
keeps the good lines in the input's format. Exit status: 0 when every entry is readable, 1 when some are not.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from typing import Sequence

from PIL import Image
from tqdm import tqdm

from side4video.data.decoders import (
    VIDEO_BACKENDS,
    FrameFolderReader,
    VideoReadError,
    verify_frame_folder,
    verify_video_file,
)
from side4video.data.lists import VideoRecord, format_record, read_annotation_list
from side4video.errors import Side4VideoError

JPEG_START = b"\xff\xd8"                     # SOI marker
JPEG_END = b"\xff\xd9"                       # EOI marker
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"    # the IEND chunk: length 0, type, CRC
# Bytes read from each end of a frame file by the cheap check: the markers, plus room for zero padding that
# some writers leave after the JPEG end marker (decoders ignore it).
EDGE_BYTES = 64


def check_frame_file(path: str) -> str | None:
    """Why one frame image is damaged, from its size and its first and last bytes only; None when it looks whole.

    JPEG and PNG (recognised by their first bytes, whatever the file name) must end with their end marker / IEND
    chunk, which a file cut short lacks; other formats must have headers that PIL can verify."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as handle:
            head = handle.read(EDGE_BYTES)
            handle.seek(max(size - EDGE_BYTES, 0))
            tail = handle.read()
    except OSError as error:
        return f"cannot read ({error.strerror or error})"
    if head.startswith(JPEG_START):
        return None if tail.rstrip(b"\x00").endswith(JPEG_END) else "truncated JPEG (no end marker FF D9)"
    if head.startswith(PNG_SIGNATURE):
        return None if tail.rstrip(b"\x00").endswith(PNG_END) else "truncated PNG (no IEND chunk at the end)"
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        message = str(error).replace(f"'{path}'", "").replace(path, "").strip()
        return f"not a readable image ({type(error).__name__}{': ' + message if message else ''})"
    return None


def check_frame_files(directory: str, num_frames: int, image_tmpl: str) -> None:
    """The cheap check of every listed frame file; raises VideoReadError naming the damaged ones."""
    damaged = []
    for i in range(1, num_frames + 1):
        name = image_tmpl.format(i)
        reason = check_frame_file(os.path.join(directory, name))
        if reason is not None:
            damaged.append(f"{name} ({reason})")
    if damaged:
        shown = ", ".join(damaged[:3]) + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "")
        raise VideoReadError(directory, f"{len(damaged)} of {num_frames} frame files damaged: {shown}")


def decode_frame_folder(directory: str, num_frames: int, image_tmpl: str) -> None:
    """Decode every frame (``--deep``), one at a time to bound memory; all must have one size, as clips need."""
    reader = FrameFolderReader(directory, num_frames, image_tmpl)
    first_size = None
    for index in range(num_frames):
        size = tuple(reader.read([index]).shape[-2:])
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise VideoReadError(directory, f"frames differ in size: {image_tmpl.format(index + 1)} is "
                                            f"{size[0]}x{size[1]}, {image_tmpl.format(1)} is "
                                            f"{first_size[0]}x{first_size[1]}")


def check_record(record: VideoRecord, root: str, image_tmpl: str, backend: str, deep: bool = False) -> str | None:
    """The reason ``record`` is unreadable, or None when it reads fine (``deep``: decode every frame of a frame
    folder too; video files are always decoded completely)."""
    path = os.path.join(root, record.path)
    try:
        if record.is_video:
            verify_video_file(path, backend)
        else:
            num_frames = record.num_frames or 0
            verify_frame_folder(path, num_frames, image_tmpl)  # files present, first and last frame decode
            check_frame_files(path, num_frames, image_tmpl)
            if deep:
                decode_frame_folder(path, num_frames, image_tmpl)
    except VideoReadError as error:
        return error.reason
    return None


def _check_task(task: tuple[int, VideoRecord, str, str, str, bool]) -> tuple[int, str | None]:
    index, record, root, image_tmpl, backend, deep = task
    return index, check_record(record, root, image_tmpl, backend, deep)


def _quiet_decoder_logs() -> None:
    """The reasons are reported per entry, so ffmpeg's own messages are only noise."""
    try:
        import decord  # deferred: an optional decoder

        decord.logging.set_level(decord.logging.QUIET)
    except ImportError:
        pass
    import av.logging  # deferred: a decoder, loaded only for video files

    av.logging.set_level(av.logging.PANIC)


def check_list(records: Sequence[VideoRecord], root: str, *, image_tmpl: str = "img_{:05d}.jpg",
               backend: str = "decord", workers: int = 1, progress: bool = True, deep: bool = False) -> dict[int, str]:
    """Check every record in a process pool; return ``{record position: reason}`` for the bad ones."""
    tasks = [(i, record, root, image_tmpl, backend, deep) for i, record in enumerate(records)]
    bad: dict[int, str] = {}
    with tqdm(total=len(tasks), desc="checking", unit="video", disable=not progress, file=sys.stderr) as bar:
        if workers > 1:
            with multiprocessing.Pool(workers, initializer=_quiet_decoder_logs) as pool:
                results = pool.imap_unordered(_check_task, tasks, chunksize=4)
                for index, reason in results:
                    if reason is not None:
                        bad[index] = reason
                    bar.update()
        else:
            _quiet_decoder_logs()
            for task in tasks:
                index, reason = _check_task(task)
                if reason is not None:
                    bad[index] = reason
                bar.update()
    return bad


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("list", help="annotation list (TSN format)")
    parser.add_argument("--root", required=True, help="directory the list's paths are relative to")
    parser.add_argument("--image_tmpl", default="img_{:05d}.jpg", help="frame file template, 1-indexed")
    parser.add_argument("--backend", default="decord", choices=VIDEO_BACKENDS, help="video decoder")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--out", default=None, help="clean list to write (default: LIST.clean.txt)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--deep", action="store_true",
                        help="decode every frame of frame folders (slow) instead of checking their files' structure "
                             "only; video files are always decoded completely")
    args = parser.parse_args(argv)

    if not os.path.isdir(args.root):
        parser.error(f"--root directory not found: {args.root}")
    try:
        records = read_annotation_list(args.list)
    except Side4VideoError as error:
        parser.error(str(error))
    bad = check_list(records, args.root, image_tmpl=args.image_tmpl, backend=args.backend,
                     workers=args.workers, progress=not args.no_progress, deep=args.deep)

    for index in sorted(bad):
        record = records[index]
        print(f"UNREADABLE {record.path} (line {record.line}): {bad[index]}")
    out = args.out or f"{os.path.splitext(args.list)[0]}.clean.txt"
    with open(out, "w", encoding="utf-8") as handle:
        handle.writelines(format_record(r) + "\n" for i, r in enumerate(records) if i not in bad)
    print(f"{len(bad)} of {len(records)} entries unreadable; {len(records) - len(bad)} written to {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
