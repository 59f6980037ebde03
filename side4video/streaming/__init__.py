"""Online recognition: a causal side network run frame by frame on a live stream (``StreamingRecognizer``), its
step as a pure tensor function with explicit state (``StreamStep``, what ``side4video export --mode stream``
exports), and the ``side4video stream`` tool's loop (``run_stream``)."""
from .recognizer import StreamingRecognizer, default_stride
from .step import StreamStep, create_stream_step

__all__ = ["StreamingRecognizer", "StreamStep", "create_stream_step", "default_stride"]
