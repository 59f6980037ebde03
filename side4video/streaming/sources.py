"""Where a stream's frames come from: a video file, a frame folder, a camera device or an RTSP/HTTP URL.

:func:`open_source` returns a :class:`FrameSource`: an iterator of ``(index, time_s, rgb uint8 [H, W, 3])`` with the
source's frame rate when known. Files, cameras and URLs are decoded by PyAV (FFmpeg); a camera is a device path
(``/dev/video0``) or a bare index (``0`` → ``/dev/video0`` on Linux). A source that cannot be opened is one line
(:class:`~side4video.errors.InputNotFoundError` / :class:`~side4video.errors.DataError`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from PIL import Image

from ..errors import DataError, InputNotFoundError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
CAMERA_FORMATS = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}


class FrameSource:
    """An iterator of ``(index, time_s, frame)``; ``fps`` (None when unknown) and ``description`` for messages."""

    def __init__(self, frames: Iterator[tuple[int, float, np.ndarray]], fps: float | None, description: str,
                 close=None):
        self._frames = frames
        self.fps = fps
        self.description = description
        self._close = close

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        return self._frames

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


def camera_device(source: str) -> tuple[str, str] | None:
    """``(device, ffmpeg input format)`` when ``source`` names a camera, else None."""
    platform_format = CAMERA_FORMATS.get(sys.platform, "v4l2")
    if source.isdigit():
        return (f"/dev/video{source}" if platform_format == "v4l2" else source), platform_format
    if source.startswith("/dev/video"):
        return source, "v4l2"
    return None


def _folder_frames(folder: Path, fps: float) -> FrameSource:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) to stream")

    def frames():
        for index, path in enumerate(images):
            try:
                with Image.open(path) as image:
                    rgb = np.asarray(image.convert("RGB"))
            except OSError as exc:
                raise DataError(f"{path}: unreadable frame ({exc})") from None
            yield index, index / fps, rgb
    return FrameSource(frames(), fps, str(folder))


def _pyav_frames(target: str, description: str, input_format: str | None = None) -> FrameSource:
    try:
        container = av.open(target, format=input_format, options={"rtsp_transport": "tcp"}
                            if target.startswith("rtsp") else None, timeout=10.0)
    except (av.FFmpegError, OSError) as exc:
        raise DataError(f"cannot open {description}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{description}: no video stream")
    stream = container.streams.video[0]
    fps = float(stream.average_rate) if stream.average_rate else None

    def frames():
        index = 0
        try:
            for frame in container.decode(stream):
                time = float(frame.time) if frame.time is not None else index / (fps or 30.0)
                yield index, time, frame.to_ndarray(format="rgb24")
                index += 1
        except av.FFmpegError as exc:
            raise DataError(f"{description}: decoding stopped at frame {index}: {exc}") from None
    return FrameSource(frames(), fps, description, close=container.close)


def open_source(source: str, *, folder_fps: float = 30.0) -> FrameSource:
    """A frame folder, a video file, a camera (``/dev/videoN`` or ``N``) or a stream URL → :class:`FrameSource`."""
    if source.lower().startswith(URL_SCHEMES):
        return _pyav_frames(source, source)
    camera = camera_device(source)
    if camera is not None:
        return _pyav_frames(camera[0], f"camera {camera[0]}", camera[1])
    path = Path(source)
    if path.is_dir():
        return _folder_frames(path, folder_fps)
    if not path.exists():
        raise InputNotFoundError(f"{source}: no such video file, frame folder or camera")
    return _pyav_frames(str(path), str(path))


__all__ = ["FrameSource", "open_source", "camera_device", "IMAGE_EXTENSIONS"]
