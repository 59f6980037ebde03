"""Run logging: a log file plus console on the main process, JSON-lines metrics, TensorBoard, Markdown tables,
training curves."""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

LOGGER_NAME = "side4video"


class _EarlyRecords(logging.Handler):
    """Keeps the records logged before the output folder exists, for the log file opened later."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def setup_logging(output_dir: Path | None, is_main: bool, filename: str = "train.log", *,
                  keep_for_file: bool = False) -> logging.Logger:
    """Console + ``output_dir/filename`` on the main process; warnings only elsewhere.

    ``keep_for_file`` (with no ``output_dir``): remember what is logged until the next call opens the log file and
    write it there first; for work done before the output folder may be created (loading a checkpoint that may be
    refused), whose lines belong in the log all the same."""
    logger = logging.getLogger(LOGGER_NAME)
    early = [record for handler in logger.handlers if isinstance(handler, _EarlyRecords) for record in handler.records]
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    formatter = logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(formatter)
    logger.addHandler(console)
    if is_main and output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(output_dir / filename)
        handler.setFormatter(formatter)
        for record in early:
            handler.handle(record)
        logger.addHandler(handler)
    elif keep_for_file:
        logger.addHandler(_EarlyRecords())
    # DeepSpeed is chatty at INFO; our own lines say what matters.
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    return logger


PROGRESS_INTERVAL_S = 60.0


def progress_bar(interval: float | None = None, **kwargs):
    """A tqdm bar that redraws live on a terminal and writes a line only every ``interval`` seconds (default 60)
    into a log file or CI output. Update its postfix with ``set_postfix(..., refresh=False)``: a refreshing
    postfix would redraw at every step whatever the interval."""
    interactive = sys.stderr.isatty()
    every = interval if interval is not None else PROGRESS_INTERVAL_S
    return tqdm(dynamic_ncols=interactive, mininterval=0.1 if interactive else every,
                maxinterval=max(every, 10.0), file=sys.stderr, **kwargs)


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(_jsonable(row), allow_nan=False) + "\n")


def append_jsonl_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    if rows:
        with open(path, "a") as handle:
            handle.writelines(json.dumps(_jsonable(row), allow_nan=False) + "\n" for row in rows)


def rewrite_jsonl(path: Path, keep) -> None:
    """Keep only the rows for which ``keep(row)`` is true (a resumed run drops what it will replay)."""
    rows = [row for row in read_jsonl(path) if keep(row)]
    Path(path).write_text("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))


def dump_json(value: Any) -> str:
    """Strict JSON (NaN/inf become null: files stay valid JSON)."""
    return json.dumps(_jsonable(value), indent=2, allow_nan=False)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


class TensorBoard:
    """A SummaryWriter on the main process; a no-op elsewhere or when disabled."""

    def __init__(self, log_dir: Path | None, enabled: bool):
        self.writer = None
        if enabled and log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # deferred: heavy; only when TensorBoard logging is on
            self.writer = SummaryWriter(str(log_dir))

    def scalars(self, step: int, **values: float | None) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            if value is not None:
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_curves(metrics_path: str | Path, out_path: str | Path) -> None:
    """Training loss and validation top-1/top-5 (retrieval: text→video R@1/R@5) per epoch from ``metrics.jsonl``."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    if not rows:
        return
    import matplotlib  # deferred: a heavy import that only the end of a run needs
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: a heavy import only plots need
    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("train loss")
    # recognition: top-1/top-5; retrieval: R@1/R@5 of text→video
    for key in ("val_top1", "val_top5", "val_t2v_R1", "val_t2v_R5"):
        points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            right.plot(*zip(*points), marker="o", label=key)
    right.set_xlabel("epoch")
    right.set_ylabel("percent")
    right.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def format_number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into a README); numbers right-aligned."""
    cells = [[format_number(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), rule] + [line(row) for row in cells])
