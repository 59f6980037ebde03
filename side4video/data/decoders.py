"""Clip readers: folders of frame images, and video files through decord, PyAV or torchcodec.

A reader is opened inside ``Dataset.__getitem__`` (so no decoder state exists before the
DataLoader forks), tells the frame count, decodes only the requested frames and is closed.
Every failure caused by the data (missing or empty file, undecodable content, too few frames)
is raised as ``VideoReadError(path, reason)``; anything else is a bug and propagates unchanged.

Frames come back as a uint8 tensor ``[N, 3, H, W]`` whose memory is channels-last (a view of the
decoders' ``[N, H, W, 3]`` arrays): torchvision's uint8 resize runs about 3x faster on that layout.

Decoding at a smaller size: ``read(indices, min_size=(h, w))`` asks for frames at the decoder's cheapest size that
still covers ``h x w`` (``data.augment_on: device``, where the training device resizes whole batches anyway).
JPEG frames use PIL's draft mode (the decoder's DCT scaling by 1/2, 1/4 or 1/8, only when the stored frame is at
least twice as large as needed); PyAV scales in FFmpeg's swscale, with the RGB conversion in one pass, to exactly
``h x w``. decord and torchcodec decode at the stored size: decord fixes its output size when a reader opens, and a
second open (its frame index rebuilt) cost more than the scaling saved (benchmarks/bench_loader.py, 1080p).
``scales_at_decode`` says which readers scale; ``frame_shape`` is the stored ``(height, width)`` from the file's
header. Without ``min_size`` every reader returns the stored size, as always.

torchcodec is optional: it is not a dependency of the package and it needs the system's FFmpeg shared
libraries (4 to 9). Whether it can load is detected once per process (:func:`torchcodec_available`); a
reader opened without them raises one ``ConfigError`` line saying what to install.
"""
from __future__ import annotations

import functools
import io
import os
import re
from typing import Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError
from .lists import VideoRecord

VIDEO_BACKENDS = ("decord", "pyav", "torchcodec")


class VideoReadError(Exception):
    """A video or frame folder that cannot be read; ``reason`` is a short human-readable cause."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # keep both fields when sent between processes
        return type(self), (self.path, self.reason)


class ClipReader(Protocol):
    path: str
    num_frames: int

    @property
    def frame_shape(self) -> tuple[int, int]: ...

    def read(self, indices: Sequence[int] | np.ndarray, min_size: tuple[int, int] | None = None) -> torch.Tensor: ...

    def close(self) -> None: ...

    def __enter__(self) -> "ClipReader": ...

    def __exit__(self, *exc_info) -> None: ...


def _first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error message, without decord's "[hh:mm:ss] /src/file.cc:123: " prefix."""
    lines = str(error).strip().splitlines()
    message = re.sub(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", lines[0]) if lines else type(error).__name__
    return message[:limit]


def _check_video_file(path: str) -> None:
    """Cheap checks that give clearer reasons than the decoders' own messages."""
    if not os.path.exists(path):
        raise VideoReadError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoReadError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "empty file (0 bytes)")


def _unique_indices(indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Sorted distinct indices to decode, and how to expand them back (None: already in order)."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise ValueError("no frame indices requested")
    unique, inverse = np.unique(indices, return_inverse=True)
    return unique, (None if np.array_equal(unique, indices) else inverse)


def _to_frames_tensor(frames_nhwc: np.ndarray, inverse: np.ndarray | None) -> torch.Tensor:
    if inverse is not None:
        frames_nhwc = frames_nhwc[inverse]
    return torch.from_numpy(np.ascontiguousarray(frames_nhwc)).permute(0, 3, 1, 2)


class _Reader:
    """Context-manager plumbing shared by the readers. ``scales_at_decode``: whether ``read(min_size=...)`` can
    return smaller frames (callers that need the stored shape only to choose ``min_size`` skip asking for it)."""

    scales_at_decode = False

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class FrameFolderReader(_Reader):
    """A folder of 1-indexed frame images named ``image_tmpl.format(i)``.

    The listed frame count is trusted after one cheap check: the last listed frame file exists.
    Only the requested frames are decoded (PIL; torchvision's decode_jpeg measured the same speed).
    """

    scales_at_decode = True     # JPEG draft mode

    def __init__(self, directory: str, num_frames: int, image_tmpl: str):
        self.path = directory
        self.image_tmpl = image_tmpl
        if not os.path.isdir(directory):
            raise VideoReadError(directory, "frame folder not found")
        if num_frames < 1:
            raise VideoReadError(directory, "listed with 0 frames")
        last_file = os.path.join(directory, image_tmpl.format(num_frames))
        if not os.path.isfile(last_file):
            present = len(os.listdir(directory))
            if present == 0:
                raise VideoReadError(directory, "frame folder is empty")
            raise VideoReadError(
                directory, f"frame file {os.path.basename(last_file)} missing: the list says {num_frames} frames, "
                           f"the folder holds {present} files")
        self.num_frames = num_frames

    def _file(self, index: int) -> str:
        return os.path.join(self.path, self.image_tmpl.format(index + 1))

    def _load(self, index: int, min_size: tuple[int, int] | None = None) -> np.ndarray:
        file = self._file(index)
        try:
            return _decode_image(file, self.path, os.path.basename(file), min_size)
        except FileNotFoundError:
            raise VideoReadError(self.path, f"frame file {os.path.basename(file)} missing") from None

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the first frame, from its header."""
        file = self._file(0)
        try:
            return _image_shape(file, self.path, os.path.basename(file))
        except FileNotFoundError:
            raise VideoReadError(self.path, f"frame file {os.path.basename(file)} missing") from None

    def read(self, indices: Sequence[int] | np.ndarray, min_size: tuple[int, int] | None = None) -> torch.Tensor:
        unique, inverse = _unique_indices(indices)
        return _stack_images(self.path, [self._load(int(i), min_size) for i in unique], inverse)


def _decode_image(source: str | io.BytesIO, path: str, name: str,
                  min_size: tuple[int, int] | None = None) -> np.ndarray:
    """One frame image as RGB ``[H, W, 3]`` (PIL); a file that does not decode is ``VideoReadError(path, ...)``.
    A missing file stays FileNotFoundError (the caller names it). ``min_size`` ``(h, w)``: a JPEG decodes at the
    smallest DCT scale (1/2, 1/4, 1/8) that still covers it (PIL's draft mode; other formats ignore it)."""
    try:
        with Image.open(source) as image:
            if min_size is not None:
                image.draft("RGB", (int(min_size[1]), int(min_size[0])))
            # convert() copies even an RGB image: only convert what is not RGB already
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except FileNotFoundError:
        raise
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        raise VideoReadError(path, f"cannot decode {name}: {_first_line(error)}") from None


def _image_shape(source: str | io.BytesIO, path: str, name: str) -> tuple[int, int]:
    """``(height, width)`` of an image from its header (nothing decoded)."""
    try:
        with Image.open(source) as image:
            return image.height, image.width
    except FileNotFoundError:
        raise
    except Exception as error:
        raise VideoReadError(path, f"cannot decode {name}: {_first_line(error)}") from None


def _stack_images(path: str, images: list[np.ndarray], inverse: np.ndarray | None) -> torch.Tensor:
    if len({image.shape for image in images}) > 1:
        raise VideoReadError(path, f"frames differ in size: {sorted({im.shape for im in images})}")
    return _to_frames_tensor(np.stack(images), inverse)


class EncodedFramesReader(_Reader):
    """A frame folder held in memory: its image files' bytes in frame order (a sample of a WebDataset shard).

    Frames decode exactly as :class:`FrameFolderReader` decodes the same files; ``path`` names the sample in errors.
    """

    scales_at_decode = True

    def __init__(self, path: str, frames: Sequence[bytes], names: Sequence[str] | None = None):
        self.path = path
        self._frames = list(frames)
        self._names = list(names) if names is not None else [f"frame {i + 1}" for i in range(len(self._frames))]
        self.num_frames = len(self._frames)
        if self.num_frames == 0:
            raise VideoReadError(path, "sample holds no frames")

    @property
    def frame_shape(self) -> tuple[int, int]:
        return _image_shape(io.BytesIO(self._frames[0]), self.path, self._names[0])

    def read(self, indices: Sequence[int] | np.ndarray, min_size: tuple[int, int] | None = None) -> torch.Tensor:
        unique, inverse = _unique_indices(indices)
        images = [_decode_image(io.BytesIO(self._frames[i]), self.path, self._names[i], min_size)
                  for i in unique.tolist()]
        return _stack_images(self.path, images, inverse)


class DecordReader(_Reader):
    """A video file read with ``decord.VideoReader(path, num_threads=1)`` and ``get_batch``.

    Known decord 0.6 limitation: a few small frame widths (16, 24, 48, 72 px) fail to decode with
    "Check failed: from_size == to_size"; such videos read fine with ``video_backend: pyav``.
    """

    def __init__(self, path: str):
        self.path = path
        _check_video_file(path)
        import decord  # lazily: decord wheels exist only for x86-64 (deferred: an optional decoder)

        # decord's C++ log lines ("[hh:mm:ss] /src/...: ...") would interleave with ours; failures still raise
        decord.logging.set_level(decord.logging.QUIET)

        self._shape: tuple[int, int] | None = None
        try:
            self._reader = decord.VideoReader(path, num_threads=1)
        except Exception as error:
            raise VideoReadError(path, f"cannot open video (decord: {_first_line(error)})") from None
        self.num_frames = len(self._reader)
        if self.num_frames == 0:
            raise VideoReadError(path, "video has no frames")

    @property
    def frame_shape(self) -> tuple[int, int]:
        """From the stream header, through PyAV (opening it costs about a decoded frame: decord tells a frame's size
        only by decoding one)."""
        if self._shape is None:
            self._shape = _probe_frame_shape(self.path)
        return self._shape

    def read(self, indices: Sequence[int] | np.ndarray, min_size: tuple[int, int] | None = None) -> torch.Tensor:
        """``min_size`` is accepted and ignored: frames come at their stored size (see the module docstring)."""
        unique, inverse = _unique_indices(indices)
        try:
            batch = self._reader.get_batch(unique.tolist()).asnumpy()
        except Exception as error:
            raise VideoReadError(self.path, f"decoding failed (decord: {_first_line(error)})") from None
        return _to_frames_tensor(batch, inverse)

    def close(self) -> None:
        self._reader = None


def _decode_size(min_size: tuple[int, int] | None, stored: tuple[int, int]) -> tuple[int, int] | None:
    """The size a scaling decoder should output for ``min_size``: None (the stored size) unless it is smaller in both
    dimensions; decoders never enlarge (the resize after them does, as for the stored size)."""
    if min_size is None:
        return None
    height, width = int(min_size[0]), int(min_size[1])
    return (height, width) if height < stored[0] and width < stored[1] else None


def _probe_frame_shape(path: str) -> tuple[int, int]:
    """``(height, width)`` of a video file's first video stream, from its header (PyAV; nothing decoded)."""
    import av  # deferred: a decoder, loaded only for video files

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoReadError(path, "no video stream")
            context = container.streams.video[0].codec_context
            return int(context.height), int(context.width)
    except VideoReadError:
        raise
    except Exception as error:
        raise VideoReadError(path, f"cannot open video (pyav: {_first_line(error)})") from None


class PyAVReader(_Reader):
    """A video file read with PyAV (single-threaded decoding, one reader per worker).

    Frames are decoded in order up to the last requested one; only requested frames are converted
    to RGB. No seeking: TSN segments span the whole video, so the last requested frame is near
    the end anyway (decord, the default backend, is the faster path for long videos).
    The frame count is the stream header's, or the number of packets when the header has none
    (e.g. mkv/webm).
    """

    scales_at_decode = True     # swscale, with the RGB conversion

    def __init__(self, path: str):
        self.path = path
        _check_video_file(path)
        import av  # deferred: a decoder, loaded only for video files

        self._av = av
        self._container = None
        try:
            self._container = av.open(path)
            if not self._container.streams.video:
                raise VideoReadError(path, "no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.codec_context.thread_count = 1  # parallelism comes from DataLoader workers
            self.num_frames = self._stream.frames or self._count_packets(path)
        except VideoReadError:
            self.close()
            raise
        except Exception as error:
            self.close()
            raise VideoReadError(path, f"cannot open video (pyav: {_first_line(error)})") from None
        if self.num_frames == 0:
            self.close()
            raise VideoReadError(path, "video has no frames")

    def _count_packets(self, path: str) -> int:
        with self._av.open(path) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size > 0)

    @property
    def frame_shape(self) -> tuple[int, int]:
        context = self._stream.codec_context
        return int(context.height), int(context.width)

    def read(self, indices: Sequence[int] | np.ndarray, min_size: tuple[int, int] | None = None) -> torch.Tensor:
        unique, inverse = _unique_indices(indices)
        wanted = set(unique.tolist())
        last = int(unique[-1])
        decoded: dict[int, np.ndarray] = {}
        # swscale converts to RGB and scales in one pass: scaling costs nothing beyond the conversion
        size = _decode_size(min_size, self.frame_shape)
        scale = {} if size is None else {"height": size[0], "width": size[1], "interpolation": "AREA"}
        position = -1
        try:
            for position, frame in enumerate(self._container.decode(self._stream)):
                if position in wanted:
                    decoded[position] = frame.to_ndarray(format="rgb24", **scale)
                if position >= last:
                    break
        except Exception as error:
            raise VideoReadError(self.path, f"decoding failed after {position + 1} frames "
                                            f"(pyav: {_first_line(error)})") from None
        if len(decoded) < len(unique):
            raise VideoReadError(self.path, f"stream ended after {position + 1} of {self.num_frames} frames")
        frames = [decoded[i] for i in unique.tolist()]
        if len({f.shape for f in frames}) > 1:
            raise VideoReadError(self.path, "frames differ in size")
        return _to_frames_tensor(np.stack(frames), inverse)

    def decode_all(self) -> int:
        """Decode every frame (no colour conversion); return the count, or raise if it falls short."""
        decoded = 0
        try:
            for _ in self._container.decode(self._stream):
                decoded += 1
        except Exception as error:
            raise VideoReadError(self.path, f"decoding failed after {decoded} frames "
                                            f"(pyav: {_first_line(error)})") from None
        if decoded < self.num_frames:
            raise VideoReadError(self.path, f"stream ended after {decoded} of {self.num_frames} frames")
        return decoded

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


_MISSING_LIBRARY = re.compile(r"OSError: (\S+?): cannot open shared object file")
_LOAD_ERROR = re.compile(r"^\w*(?:Error|Exception): (?!Could not load this library)(.+)$", re.MULTILINE)
_CPP_LOCATION = re.compile(r"^\w+, \S+\.(?:cpp|cc|h):\d+, ")


def _torchcodec_message(error: BaseException, path: str) -> str:
    """torchcodec's first line without its "Class, /src/File.cpp:41, " prefix and the path (already named)."""
    message = _CPP_LOCATION.sub("", _first_line(error, limit=1000)).replace(f"{path} ", "").replace(path, "")
    return re.sub(r"\s+", " ", message).strip(" :")[:200]


def _torchcodec_load_failure(error: BaseException) -> str:
    """A short reason from torchcodec's long "Could not load libtorchcodec" message (one traceback per FFmpeg)."""
    message = str(error)
    missing = _MISSING_LIBRARY.findall(message)
    if missing:
        shown = missing[0] if len(missing) == 1 else f"{missing[0]} ... {missing[-1]}"
        return f"no FFmpeg 4-9 shared libraries found: {shown} missing"
    causes = _LOAD_ERROR.findall(message)  # e.g. "undefined symbol: ..." when torch and torchcodec do not match
    return (causes[-1].strip() if causes else _first_line(error))[:200]


@functools.lru_cache(maxsize=None)
def torchcodec_available() -> tuple[bool, str]:
    """``(True, "torchcodec V with FFmpeg N")`` when torchcodec can decode videos in this process, else
    ``(False, short reason)``.

    Checked once per process: torchcodec loads its FFmpeg-dependent libraries when imported and only
    records (``torchcodec.ffmpeg_major_version is None``) that they failed; the reason comes from the
    error its decoder raises in that case.
    """
    try:
        import torchcodec  # deferred: an optional decoder
        from torchcodec.decoders import VideoDecoder  # deferred: an optional decoder
    except ModuleNotFoundError as error:
        if error.name != "torchcodec":
            return False, f"importing torchcodec failed: {_first_line(error)}"
        return False, "torchcodec is not installed"
    except Exception as error:  # e.g. a backend plug-in that fails to load, or a torch/torchcodec mismatch
        return False, f"importing torchcodec failed: {_first_line(error)}"
    version = getattr(torchcodec, "ffmpeg_major_version", None)
    if version is not None:
        return True, f"torchcodec {getattr(torchcodec, '__version__', '?')} with FFmpeg {version}"
    try:
        VideoDecoder(b"")  # without FFmpeg this raises the loader's error before looking at the source
    except Exception as error:
        return False, _torchcodec_load_failure(error)
    return False, "torchcodec reports no FFmpeg libraries"


def _require_torchcodec() -> None:
    ok, reason = torchcodec_available()
    if ok:
        return
    if reason.startswith("torchcodec is not installed"):
        raise ConfigError(f"data.video_backend: {reason}; pip install torchcodec (the release built for your "
                          f"torch version) or use video_backend: decord / pyav")
    raise ConfigError(f"data.video_backend: torchcodec cannot load the FFmpeg libraries it needs ({reason}); "
                      f"install FFmpeg (e.g. apt-get install ffmpeg) or use video_backend: decord / pyav")


class TorchCodecReader(_Reader):
    """A video file read with ``torchcodec.decoders.VideoDecoder`` and ``get_frames_at``.

    ``seek_mode="exact"``: opening scans the file's packets (no decoding), so the frame count is the
    real one and index i is the i-th frame in presentation order, as with PyAV; only the requested
    frames (from the nearest key frames on) are decoded. A file holding fewer frames than its header
    lists (cut off) is reported as unreadable, as PyAV's reader does. One FFmpeg thread: parallelism
    comes from DataLoader workers. Pixels equal PyAV's (both convert with FFmpeg's swscale).

    ``device="cuda"`` decodes on the GPU (NVDEC) and returns CUDA tensors. The training dataset opens
    readers inside DataLoader workers, which cannot use CUDA (they are forked, and many decoders would
    share one GPU), so the dataset always decodes on the CPU; CUDA decoding only makes sense in the
    main process (``data.workers: 0``) with readers you open yourself.
    """

    def __init__(self, path: str, device: str = "cpu"):
        self.path = path
        self._decoder = None
        _require_torchcodec()
        device = str(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"TorchCodecReader: device={device!r} but no CUDA device is available")
        _check_video_file(path)
        from torchcodec.decoders import VideoDecoder  # deferred: an optional decoder

        try:
            self._decoder = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=1, device=device,
                                         seek_mode="exact")
            self.num_frames = len(self._decoder)
            listed = self._decoder.metadata.num_frames_from_header
        except Exception as error:
            self._decoder = None
            raise VideoReadError(path, f"cannot open video (torchcodec: {_torchcodec_message(error, path)})") from None
        if self.num_frames == 0:
            self._decoder = None
            raise VideoReadError(path, "video has no frames")
        if listed is not None and self.num_frames < listed:  # e.g. a cut-off file whose index is at the front
            self._decoder = None
            raise VideoReadError(path, f"stream ended after {self.num_frames} of {listed} frames")

    @property
    def frame_shape(self) -> tuple[int, int]:
        metadata = self._decoder.metadata
        return int(metadata.height), int(metadata.width)

    def read(self, indices: Sequence[int] | np.ndarray, min_size: tuple[int, int] | None = None) -> torch.Tensor:
        """``min_size`` is accepted and ignored: frames come at their stored size."""
        unique, inverse = _unique_indices(indices)
        if unique[0] < 0 or unique[-1] >= self.num_frames:  # a caller's bug, not the data's
            raise IndexError(f"{self.path}: frame indices {unique[0]}..{unique[-1]} outside 0..{self.num_frames - 1}")
        try:
            frames = self._decoder.get_frames_at(unique.tolist()).data  # [n, H, W, 3] uint8
        except Exception as error:
            raise VideoReadError(self.path, f"decoding failed (torchcodec: {_torchcodec_message(error, self.path)})"
                                 ) from None
        if frames.shape[0] < len(unique):
            raise VideoReadError(self.path, f"stream ended: {frames.shape[0]} of {len(unique)} requested frames "
                                            f"decoded")
        if inverse is not None:
            frames = frames[torch.from_numpy(inverse).to(frames.device)]
        return frames.permute(0, 3, 1, 2)

    def close(self) -> None:
        self._decoder = None


def open_reader(record: VideoRecord, root: str, *, image_tmpl: str, video_backend: str = "decord") -> ClipReader:
    """Open the reader for one annotated video (raises VideoReadError for unreadable data)."""
    path = os.path.join(root, record.path)
    if not record.is_video:
        return FrameFolderReader(path, record.num_frames or 0, image_tmpl)
    if video_backend == "decord":
        return DecordReader(path)
    if video_backend == "pyav":
        return PyAVReader(path)
    if video_backend == "torchcodec":
        return TorchCodecReader(path)
    raise ValueError(f"data.video_backend must be one of {VIDEO_BACKENDS}, got {video_backend!r}")


def verify_video_file(path: str, video_backend: str = "decord", chunk_size: int = 32) -> int:
    """Decode every frame of a video (slow, thorough); return the frame count or raise VideoReadError."""
    if video_backend in ("decord", "torchcodec"):
        with (DecordReader(path) if video_backend == "decord" else TorchCodecReader(path)) as reader:
            for start in range(0, reader.num_frames, chunk_size):
                reader.read(np.arange(start, min(start + chunk_size, reader.num_frames)))
            return reader.num_frames
    if video_backend != "pyav":
        raise ValueError(f"video backend must be one of {VIDEO_BACKENDS}, got {video_backend!r}")
    with PyAVReader(path) as reader:
        return reader.decode_all()


def verify_frame_folder(directory: str, num_frames: int, image_tmpl: str) -> int:
    """Check that all ``num_frames`` frame files exist and that the first and last decode."""
    reader = FrameFolderReader(directory, num_frames, image_tmpl)
    present = set(os.listdir(directory))
    missing = [image_tmpl.format(i) for i in range(1, num_frames + 1) if image_tmpl.format(i) not in present]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise VideoReadError(directory, f"{len(missing)} of {num_frames} frame files missing: {shown}")
    reader.read([0, num_frames - 1])
    return num_frames
