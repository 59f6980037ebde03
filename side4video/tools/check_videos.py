"""Find unreadable entries of an annotation list and write a list without them.

    python -m side4video.tools.check_videos LIST --root DIR [--image_tmpl TMPL] [--backend decord|pyav]
                                            [--workers N] [--out CLEAN_LIST]

Video files are decoded completely; frame folders must hold every listed frame file, and their
first and last frames must decode. Each bad entry is printed with its reason. The clean list
(default ``LIST.clean.txt``) keeps the good lines in the input's format. Exit status: 0 when every
entry is readable, 1 when some are not.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from typing import Sequence

from tqdm import tqdm

from side4video.errors import Side4VideoError
from side4video.data.decoders import VIDEO_BACKENDS, VideoReadError, verify_frame_folder, verify_video_file
from side4video.data.lists import VideoRecord, format_record, read_annotation_list


def check_record(record: VideoRecord, root: str, image_tmpl: str, backend: str) -> str | None:
    """The reason ``record`` is unreadable, or None when it reads fine."""
    path = os.path.join(root, record.path)
    try:
        if record.is_video:
            verify_video_file(path, backend)
        else:
            verify_frame_folder(path, record.num_frames or 0, image_tmpl)
    except VideoReadError as error:
        return error.reason
    return None


def _check_task(task: tuple[int, VideoRecord, str, str, str]) -> tuple[int, str | None]:
    index, record, root, image_tmpl, backend = task
    return index, check_record(record, root, image_tmpl, backend)


def _quiet_decoder_logs() -> None:
    """The reasons are reported per entry, so ffmpeg's own messages are only noise."""
    try:
        import decord

        decord.logging.set_level(decord.logging.QUIET)
    except ImportError:
        pass
    import av.logging

    av.logging.set_level(av.logging.PANIC)


def check_list(records: Sequence[VideoRecord], root: str, *, image_tmpl: str = "img_{:05d}.jpg",
               backend: str = "decord", workers: int = 1, progress: bool = True) -> dict[int, str]:
    """Check every record in a process pool; return ``{record position: reason}`` for the bad ones."""
    tasks = [(i, record, root, image_tmpl, backend) for i, record in enumerate(records)]
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
    args = parser.parse_args(argv)

    if not os.path.isdir(args.root):
        parser.error(f"--root directory not found: {args.root}")
    try:
        records = read_annotation_list(args.list)
    except Side4VideoError as error:
        parser.error(str(error))
    bad = check_list(records, args.root, image_tmpl=args.image_tmpl, backend=args.backend,
                     workers=args.workers, progress=not args.no_progress)

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
