"""The ``side4video stream`` loop: frames from a source through a :class:`StreamingRecognizer`, the top-k of every
processed frame printed (text or JSON lines) and, optionally, an annotated copy of the video written.

Ctrl-C ends the loop cleanly: what was processed is reported and the annotated video is closed (playable).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import torch
from PIL import Image, ImageDraw

from .recognizer import StreamingRecognizer
from .sources import FrameSource


class AnnotatedVideoWriter:
    """Writes RGB frames with a caption box (the current top-1 label and probability) to an mp4 (PyAV, MPEG-4)."""

    def __init__(self, path: str | Path, fps: float | None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = int(round(fps)) if fps else 30
        self.container = None
        self.stream = None

    def write(self, frame: np.ndarray, caption: str) -> None:
        height, width = frame.shape[0] & ~1, frame.shape[1] & ~1      # yuv420p needs even sides
        if self.container is None:
            self.container = av.open(str(self.path), "w")
            self.stream = self.container.add_stream("mpeg4", rate=self.fps)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
            self.stream.bit_rate = 4 * width * height * self.fps
        image = Image.fromarray(np.ascontiguousarray(frame[:height, :width]))
        if caption:
            draw = ImageDraw.Draw(image)
            box = draw.textbbox((4, 4), caption)
            draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
            draw.text((4, 4), caption, fill=(255, 255, 255))
        video_frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
        self.container.mux(self.stream.encode(video_frame))

    def close(self) -> None:
        if self.container is not None:
            self.container.mux(self.stream.encode())
            self.container.close()
            self.container = None


def top_k(probabilities: torch.Tensor, k: int, class_names: list[str] | None) -> list[dict[str, Any]]:
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return [{"class_id": int(i), "name": class_names[int(i)] if class_names else str(int(i)), "prob": float(v)}
            for v, i in zip(values.tolist(), indices.tolist())]


def run_stream(recognizer: StreamingRecognizer, source: FrameSource, *, topk: int = 5, as_json: bool = False,
               out: str | Path | None = None, max_frames: int | None = None,
               emit: Callable[[str], None] = print) -> dict[str, Any]:
    """Push every frame of ``source``; emit one line per processed frame. Returns a summary (frames read and
    processed, mean latency ms, whether it was interrupted)."""
    writer = AnnotatedVideoWriter(out, source.fps) if out else None
    caption = ""
    read = processed = 0
    latencies: list[float] = []
    interrupted = False
    try:
        for index, time_s, frame in source:
            if max_frames is not None and read >= max_frames:
                break
            read += 1
            start = time.perf_counter()
            scores = recognizer.push(frame)
            if scores is not None:
                latency = (time.perf_counter() - start) * 1000
                latencies.append(latency)
                processed += 1
                best = top_k(recognizer.probabilities(scores), topk, recognizer.class_names)
                caption = f"{best[0]['name']} {best[0]['prob']:.2f}"
                if as_json:
                    emit(json.dumps({"frame": index, "time": round(time_s, 4), "topk": best,
                                     "latency_ms": round(latency, 3)}))
                else:
                    shown = ", ".join(f"{p['name']} {p['prob']:.3f}" for p in best)
                    emit(f"frame {index:6d}  {time_s:8.3f}s  {latency:7.1f} ms  {shown}")
            if writer is not None:
                writer.write(frame, caption)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        source.close()
        if writer is not None:
            writer.close()
    return {"frames_read": read, "frames_processed": processed, "interrupted": interrupted,
            "mean_latency_ms": float(np.mean(latencies)) if latencies else None,
            "annotated": str(out) if out else None}


__all__ = ["run_stream", "AnnotatedVideoWriter", "top_k"]
