"""Decode videos into folders of JPEG frames (one folder per video), resumably and in parallel: the ``frames``
command of ``side4video.prep.cli`` (``python datasets/extract_frames.py SRC DST``).

SRC is either
  * a folder, searched recursively for files with the ``--ext`` extensions, or
  * a text file listing videos, one per line as ``path`` or ``path label`` (a video list); relative paths are
    resolved against ``--video_root`` (default: the list file's folder).

Every video ``SRC/<rel>/<name>.<ext>`` becomes the folder ``DST/<rel>/<name>/`` holding ``img_00001.jpg``,
``img_00002.jpg``, ... (``--tmpl``; frames are 1-indexed as TSN-style loaders expect). Whitespace in
relative paths becomes '_' (annotation lists are space-separated).

Resuming: a folder counts as finished only when ``DST/.done/<rel>/<name>.done`` exists, records the frame
count, and the folder holds exactly that many frames. Frames are first written to ``DST/.tmp/`` and the
folder is renamed into place before its marker is written, so a killed run never leaves a folder that
looks complete; re-running the same command redoes unfinished videos and skips finished ones.

Videos that cannot be decoded (PyAV first, decord as a fallback) are listed with the reason in
``DST/failed.txt`` (``path<TAB>reason``) and skipped; the run carries on.

Optionally (``--list_out``) a frames list ``rel_dir num_frames label`` is written for the finished
folders, with labels taken from the class folder each video sits in (``--labels_from_dirs``; a label CSV is
written too) or from the second column of the SRC video list.
"""
from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import shutil
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image
from tqdm import tqdm

from ..data.lists import format_list_line
from ..errors import DataError, InputNotFoundError
from .base import Preparer, extensions, frame_template
from .listio import (
    TMP_DIR,
    annotation_error,
    completed_frames,
    iter_lines,
    name_index,
    name_key,
    read_label_csv,
    remove_marker,
    sanitize_rel,
    strip_ext,
    write_label_csv,
    write_lines,
    write_marker,
)

DEFAULT_EXTS = "mp4,webm,avi,mkv"


class DecodeError(RuntimeError):
    """A video that could not be turned into frames."""


# --------------------------------------------------------------------------------------------------
# Jobs: which videos to extract and where to
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    src: str              # absolute path of the video file
    rel_dir: str          # output folder relative to DST (no whitespace, '/' separators)
    class_name: str | None = None   # parent folder name (for --labels_from_dirs)
    label: int | None = None        # label from a video list


@dataclass(frozen=True)
class Options:
    dst: str
    tmpl: str
    short_side: int
    no_upscale: bool
    fps: float | None
    quality: int
    min_frames: int
    backend: str


def jobs_from_dir(src_dir: Path, exts: Sequence[str], skip: Path | None = None) -> list[Job]:
    """All videos under ``src_dir`` (sorted), skipping hidden folders and the ``skip`` folder (DST)."""
    jobs = []
    skip_res = skip.resolve() if skip is not None else None
    for root, dirs, files in os.walk(src_dir, followlinks=True):
        root_p = Path(root)
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith(".") and (skip_res is None or (root_p / d).resolve() != skip_res))
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in exts:
                continue
            path = root_p / name
            rel = path.relative_to(src_dir).as_posix()
            parent = Path(rel).parent.name or None
            jobs.append(Job(src=os.path.abspath(path), rel_dir=sanitize_rel(strip_ext(rel)), class_name=parent))
    return jobs


def jobs_from_list(list_file: Path, video_root: Path) -> list[Job]:
    """Videos named in a list file: ``path`` or ``path label`` per line ('#' lines are comments)."""
    jobs = []
    root = Path(os.path.abspath(video_root))       # abspath, not resolve: keep symlinked videos under root
    for lineno, text in iter_lines(list_file, comments=True):
        fields = text.split()
        if len(fields) > 2:
            raise annotation_error(list_file, lineno, f"expected 'path' or 'path label', got {len(fields)} fields"
                                   " (paths must not contain spaces)")
        label = None
        if len(fields) == 2:
            try:
                label = int(fields[1])
            except ValueError:
                raise annotation_error(list_file, lineno, f"label {fields[1]!r} is not an integer") from None
        path = Path(fields[0])
        if not path.is_absolute():
            path = root / path
        path = Path(os.path.normpath(path))
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            raise annotation_error(list_file, lineno,
                                   f"{fields[0]} is not under --video_root {root}") from None
        parent = Path(rel).parent.name or None
        jobs.append(Job(src=str(path), rel_dir=sanitize_rel(strip_ext(rel)), class_name=parent, label=label))
    return jobs


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------

class FpsSampler:
    """Turns a stream of frame timestamps into how many times each frame is kept, for a target rate.

    Output frame k shows the first source frame whose time reaches ``k / fps`` (times relative to the
    first frame), so lowering the rate drops frames evenly and raising it repeats them.  A jump of more
    than ``max_gap`` seconds (a broken timestamp) is not filled with copies: sampling restarts there.
    """

    max_gap = 1.0

    def __init__(self, fps: float):
        self.step = 1.0 / fps
        self.t0: float | None = None
        self.next_t = 0.0

    def repeats(self, t: float) -> int:
        if self.t0 is None:
            self.t0 = t
        t -= self.t0
        if t - self.next_t > self.max_gap:
            self.next_t = t
        n = 0
        while self.next_t <= t + 1e-3:     # 1 ms tolerance for rounded timestamps
            n += 1
            self.next_t += self.step
        return n


def resize_short_side(img: Image.Image, short_side: int, no_upscale: bool) -> Image.Image:
    """Resize a PIL image so its shorter side is ``short_side`` pixels, keeping the aspect ratio."""
    if short_side <= 0:
        return img
    w, h = img.size
    short = min(w, h)
    if short == short_side or (no_upscale and short < short_side):
        return img
    if w <= h:
        size = (short_side, max(1, round(h * short_side / w)))
    else:
        size = (max(1, round(w * short_side / h)), short_side)
    return img.resize(size, Image.BILINEAR)


class FrameWriter:
    """Saves decoded frames as ``tmpl.format(1)``, ``tmpl.format(2)``, ... in one folder."""

    def __init__(self, out_dir: Path, opts: Options):
        self.out_dir = out_dir
        self.opts = opts
        self.count = 0
        self.sampler = FpsSampler(opts.fps) if opts.fps else None

    def add(self, img: Image.Image, t: float) -> None:
        repeats = self.sampler.repeats(t) if self.sampler else 1
        if repeats == 0:
            return
        img = resize_short_side(img.convert("RGB"), self.opts.short_side, self.opts.no_upscale)
        first = None
        for _ in range(repeats):
            self.count += 1
            path = self.out_dir / self.opts.tmpl.format(self.count)
            if first is None:
                img.save(path, format="JPEG", quality=self.opts.quality)
                first = path
            else:                      # a repeated frame (target fps above the source): copy the file
                shutil.copyfile(first, path)


def decode_pyav(src: str, writer: FrameWriter) -> None:
    import av  # deferred: the decoder is needed only in the worker processes that decode

    with av.open(src) as container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        for i, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else i / rate
            writer.add(frame.to_image(), t)


def decode_decord(src: str, writer: FrameWriter) -> None:
    import decord  # deferred: an optional fallback decoder (no wheels on some platforms)

    vr = decord.VideoReader(src, ctx=decord.cpu(0), num_threads=1)
    rate = vr.get_avg_fps() or 25.0
    chunk = 32                                   # sequential batches: no per-frame seeking
    for start in range(0, len(vr), chunk):
        batch = vr.get_batch(list(range(start, min(start + chunk, len(vr))))).asnumpy()
        for j, arr in enumerate(batch):
            writer.add(Image.fromarray(arr), (start + j) / rate)


def _reason(exc: BaseException) -> str:
    msg = str(exc).strip().replace("\n", " ").replace("\t", " ")
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _tmp_dir(dst: Path, rel_dir: str) -> Path:
    digest = hashlib.sha1(rel_dir.encode()).hexdigest()[:16]
    return dst / TMP_DIR / f"{digest}_{os.getpid()}"


def extract_one(job: Job, opts: Options) -> tuple[Job, str, int, str]:
    """Extract one video.  Returns ``(job, status, num_frames, reason)``, status in done/skipped/failed.

    Never raises for a bad video: every decoding problem becomes a 'failed' result.
    """
    dst = Path(opts.dst)
    n = completed_frames(dst, job.rel_dir, opts.tmpl)
    if n is not None:
        return job, "skipped", n, ""

    tmp = _tmp_dir(dst, job.rel_dir)
    errors = []
    backends = {"auto": (("pyav", decode_pyav), ("decord", decode_decord)),
                "pyav": (("pyav", decode_pyav),),
                "decord": (("decord", decode_decord),)}[opts.backend]
    count = 0
    try:
        for name, decode in backends:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            writer = FrameWriter(tmp, opts)
            try:
                decode(job.src, writer)
                if writer.count < opts.min_frames:
                    raise DecodeError(f"decoded {writer.count} frame(s), fewer than --min_frames {opts.min_frames}")
                count = writer.count
                break
            except Exception as e:  # any decoder failure: try the next backend
                errors.append(f"{name}: {_reason(e)}")
        else:
            return job, "failed", 0, "; ".join(errors)

        # Commit: drop any stale marker and old folder, move the new folder into place, then mark it done.
        final = dst / job.rel_dir
        remove_marker(dst, job.rel_dir)
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, final)
        write_marker(dst, job.rel_dir, count)
        return job, "done", count, ""
    except Exception as e:  # disk full, permissions, ...: report, don't kill the whole run
        return job, "failed", 0, "; ".join(errors + [f"writing frames: {_reason(e)}"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------

CRASH_REASON = "the decoder crashed its worker process (killed by a signal)"


def _mp_context():
    """Fork where available: workers start fast and see the already-imported modules."""
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()


def _run_isolated(fn, job: Job) -> tuple[Job, str, int, str]:
    """Run one job in its own process, so that a decoder crash is pinned on this video."""
    with ProcessPoolExecutor(1, mp_context=_mp_context()) as ex:
        try:
            return ex.submit(fn, job).result()
        except BrokenProcessPool:
            return job, "failed", 0, CRASH_REASON


def run_jobs(jobs: Sequence[Job], opts: Options, workers: int) -> list[tuple[Job, str, int, str]]:
    """Extract all jobs in worker processes and return the results in job order.

    A video that makes a decoder segfault kills its worker, which breaks the whole process pool.  The jobs
    that were in flight at that moment are then re-run one at a time in fresh processes: the crashing video
    is reported as failed and the others are extracted normally; the run goes on with a new pool.
    """
    fn = partial(extract_one, opts=opts)
    results: dict[str, tuple[Job, str, int, str]] = {}
    bar = tqdm(total=len(jobs), desc="extracting", unit="video", dynamic_ncols=True)

    def record(res: tuple[Job, str, int, str]) -> None:
        results[res[0].rel_dir] = res
        bar.update()
        if res[1] == "failed":
            bar.write(f"failed: {res[0].src}: {res[3]}")

    pos = 0
    suspects: list[Job] = []
    try:
        while pos < len(jobs) or suspects:
            while suspects:
                record(_run_isolated(fn, suspects.pop(0)))
            if pos >= len(jobs):
                break
            with ProcessPoolExecutor(workers, mp_context=_mp_context()) as ex:
                inflight: dict = {}
                broken = False
                while (pos < len(jobs) or inflight) and not broken:
                    while pos < len(jobs) and len(inflight) < 2 * workers:   # bounded queue
                        inflight[ex.submit(fn, jobs[pos])] = jobs[pos]
                        pos += 1
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        job = inflight.pop(fut)
                        try:
                            record(fut.result())
                        except BrokenProcessPool:
                            suspects.append(job)
                            broken = True
                if broken:
                    suspects.extend(inflight.values())
    finally:
        bar.close()
    return [results[job.rel_dir] for job in jobs if job.rel_dir in results]


def check_duplicates(jobs: Sequence[Job]) -> tuple[list[Job], list[tuple[Job, str]]]:
    """Two videos mapping to one output folder (``a.mp4`` and ``a.webm``): keep the first, fail the rest."""
    seen: dict[str, Job] = {}
    keep, dup = [], []
    for job in jobs:
        if job.rel_dir in seen:
            dup.append((job, f"same output folder {job.rel_dir!r} as {seen[job.rel_dir].src}"))
        else:
            seen[job.rel_dir] = job
            keep.append(job)
    return keep, dup


def build_frames_list(results: Iterable[tuple[Job, str, int, str]], labels_from_dirs: bool,
                      labels_in: Sequence[str] | None) -> tuple[list[str], list[str] | None]:
    """Frames-list lines for the finished videos, and the class names (when they come from folders)."""
    finished = [(job, n) for job, status, n, _ in results if status in ("done", "skipped")]
    if not labels_from_dirs:
        lines = []
        for job, n in finished:
            if job.label is None:
                raise DataError(f"no label for {job.src}: give labels in the SRC list or use --labels_from_dirs")
            lines.append(format_list_line(job.rel_dir, job.label, n))
        return lines, None

    for job, _ in finished:
        if job.class_name is None:
            raise DataError(f"{job.src} is not inside a class folder, so --labels_from_dirs cannot label it")
    if labels_in is not None:
        names = list(labels_in)
    else:
        names = sorted({job.class_name for job, _ in finished})
    index = name_index(names, "class names")
    lines = []
    for job, n in finished:
        key = name_key(job.class_name)
        if key not in index:
            raise DataError(f"class folder {job.class_name!r} of {job.src} is not in --labels_in")
        lines.append(format_list_line(job.rel_dir, index[key], n))
    return lines, names



# --------------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtractionSummary:
    """What one run did: videos extracted now, found finished from an earlier run, and failed."""
    done: int
    skipped: int
    failed: int


def extract_frames(*, src: str, dst: str, tmpl: str = "img_{:05d}.jpg", short_side: int = 0,
                   no_upscale: bool = False, fps: float | None = None, workers: int = 1, quality: int = 95,
                   exts: Sequence[str] = extensions(DEFAULT_EXTS), video_root: str | None = None,
                   min_frames: int = 1, backend: str = "auto", failed_out: str | None = None,
                   list_out: str | None = None, labels_from_dirs: bool = False, labels_in: str | None = None,
                   labels_out: str | None = None) -> ExtractionSummary:
    """Extract every video of ``src`` (a folder or a video list) into ``dst``; the keywords are the options of
    the ``frames`` command. Bad input (no such source, a malformed list, missing labels) raises a one-line
    Side4VideoError before anything is decoded; a video that cannot be decoded is only reported."""
    src_path, dst_path = Path(src), Path(dst)
    exts = tuple(exts)
    if src_path.is_dir():
        jobs = jobs_from_dir(src_path, exts, skip=dst_path)
    elif src_path.is_file():
        jobs = jobs_from_list(src_path, Path(video_root) if video_root else src_path.parent)
    else:
        raise InputNotFoundError(f"{src_path} is neither a folder nor a list file")
    labels = read_label_csv(labels_in) if labels_in else None
    if list_out and not labels_from_dirs and any(j.label is None for j in jobs):
        raise DataError("--list_out needs labels: use --labels_from_dirs (class folders) or a SRC list "
                        "with 'path label' lines")
    if not jobs:
        print(f"warning: no videos found in {src_path} (extensions: {','.join(exts)})", file=sys.stderr)

    dst_path.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dst_path / TMP_DIR, ignore_errors=True)   # scratch space of an earlier, interrupted run
    jobs, duplicates = check_duplicates(jobs)
    opts = Options(dst=str(dst_path), tmpl=tmpl, short_side=short_side, no_upscale=no_upscale, fps=fps,
                   quality=quality, min_frames=max(1, min_frames), backend=backend)
    results = run_jobs(jobs, opts, workers)
    results += [(job, "failed", 0, why) for job, why in duplicates]
    shutil.rmtree(dst_path / TMP_DIR, ignore_errors=True)

    failed = [(job, why) for job, status, _, why in results if status == "failed"]
    failed_path = Path(failed_out) if failed_out else dst_path / "failed.txt"
    if failed:
        write_lines(failed_path, [f"{job.src}\t{why}" for job, why in failed])
    else:
        failed_path.unlink(missing_ok=True)      # everything decoded now: drop the list of an earlier run

    summary = ExtractionSummary(done=sum(1 for r in results if r[1] == "done"),
                                skipped=sum(1 for r in results if r[1] == "skipped"), failed=len(failed))
    print(f"extracted {summary.done}, already done {summary.skipped}, failed {summary.failed} of {len(results)} "
          f"videos into {dst_path}")
    if failed:
        print(f"failed videos and reasons: {failed_path}")

    if list_out:
        lines, names = build_frames_list(results, labels_from_dirs, labels)
        write_lines(list_out, lines)
        print(f"wrote {len(lines)} lines to {list_out}")
        if names is not None:
            labels_path = Path(labels_out) if labels_out else Path(list_out).parent / "labels.csv"
            write_label_csv(labels_path, names)
            print(f"wrote {len(names)} classes to {labels_path}")
    return summary


class FrameExtraction(Preparer):
    """The ``frames`` command. Not a registered list builder: it makes the frame folders those read."""

    summary = "decode videos into resumable folders of JPEG frames"
    description = "Decode videos into resumable folders of JPEG frames (one folder per video)."

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        p = parser
        p.add_argument("src", help="folder of videos (searched recursively) or a list file ('path [label]' per line)")
        p.add_argument("dst", help="output root: DST/<relative path without extension>/<frames>")
        p.add_argument("--tmpl", type=frame_template, default="img_{:05d}.jpg",
                       help="frame file name template, 1-indexed (SSv2: '{:06d}.jpg')")
        p.add_argument("--short_side", type=int, default=0,
                       help="resize so the shorter side has this many pixels, keeping the aspect ratio (0: keep size)")
        p.add_argument("--no_upscale", action="store_true", help="with --short_side, never enlarge smaller videos")
        p.add_argument("--fps", type=float, default=None,
                       help="resample to this frame rate (default: keep every frame)")
        p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="parallel processes")
        p.add_argument("--quality", type=int, default=95, help="JPEG quality (1-100)")
        p.add_argument("--ext", dest="exts", metavar="EXT", type=extensions, default=DEFAULT_EXTS,
                       help="comma-separated video extensions searched in a SRC folder")
        p.add_argument("--video_root", default=None,
                       help="when SRC is a list file: root that its relative paths start from "
                            "(default: the list's folder)")
        p.add_argument("--min_frames", type=int, default=1, help="a video yielding fewer frames counts as failed")
        p.add_argument("--backend", choices=("auto", "pyav", "decord"), default="auto",
                       help="decoder: 'auto' tries PyAV, then decord")
        p.add_argument("--failed_out", default=None, help="where to list failed videos (default: DST/failed.txt)")
        p.add_argument("--list_out", default=None,
                       help="also write a frames list 'rel_dir num_frames label' of the finished folders")
        p.add_argument("--labels_from_dirs", action="store_true",
                       help="with --list_out: label = the class folder holding each video (sorted names -> ids)")
        p.add_argument("--labels_in", default=None,
                       help="with --labels_from_dirs: take class ids from this 'id,name' CSV instead of sorting names")
        p.add_argument("--labels_out", default=None,
                       help="with --labels_from_dirs: label CSV to write (default: labels.csv next to --list_out)")

    @classmethod
    def argument_problem(cls, options: argparse.Namespace) -> str | None:
        if options.workers < 1:
            return "--workers must be >= 1"
        if not 1 <= options.quality <= 100:
            return "--quality must be within 1..100"
        if options.fps is not None and options.fps <= 0:
            return "--fps must be positive"
        if options.short_side < 0:
            return "--short_side must be >= 0"
        if (options.labels_from_dirs or options.labels_in or options.labels_out) and not options.list_out:
            return "--labels_from_dirs/--labels_in/--labels_out need --list_out"
        if (options.labels_in or options.labels_out) and not options.labels_from_dirs:
            return "--labels_in/--labels_out only apply with --labels_from_dirs"
        return None

    build = staticmethod(extract_frames)
