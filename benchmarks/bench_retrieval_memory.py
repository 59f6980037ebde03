"""Text–video retrieval training memory: exact bytes autograd keeps for backward, per clip, in one run.

    python benchmarks/bench_retrieval_memory.py [--archs ViT-B/32 ViT-B/16] [--frames 12] [--batch 2]
        [--precision fp32|bf16] [--device cpu|cuda|auto] [--methods ...] [--rounds 2] [--quick-gelu]
        [--output benchmarks/results/retrieval_memory.md | -]

Methods (random weights, the same clips and captions for every method, the same training loss — the retrieval
task's own ``RetrievalTask.loss``: symmetric InfoNCE over the batch's caption × clip similarities with the learnt
logit scale — reached through the engine's ``forward_loss``):

* ``side4video`` — the retrieval model (``RetrievalModel``): the side network (D=320 by default) over the frozen
  image tower's taps, the tower's own frozen LN + projection on the class tokens, DRL's WTI head; text tower frozen.
* ``clip4clip_finetune`` — CLIP4Clip meanP: the whole image tower trains (every frame through the full ViT with
  grad; fp32 master weights, autocast under bf16), the cosine of the caption embedding with the mean of the
  L2-normalised frame embeddings. The text tower is frozen here, as for the side network (like for like).
* ``clip4clip_frozen`` — CLIP4Clip with the image tower frozen (its forward under no-grad): a trainable linear
  projection ``Linear(E, E)`` (identity at start) on each frozen frame embedding, then meanP. With nothing but the
  logit scale trainable (``clip4clip_frozen_scale``) backward would keep only the ``[N, N]`` similarity matrix, so
  the projection is what makes this row a (tiny) trained head.
* ``side4video+text`` / ``clip4clip_finetune+text`` — the same with the text tower trainable (the Side4Video
  reference trains it at 1e-3 × lr; CLIP4Clip trains both towers).

"Saved" is exact: the distinct storages saved for backward during the forward and the loss
(:class:`side4video.engine.memory.SavedTensorMeter` via ``benchmarks/memory_speed/meters.RecordingMeter``; every
parameter and buffer of every tower and model is left out), divided by the batch. Counting needs the forward only:
no backward runs unless ``--backward`` asks for one (a check that the gradient reaches what trains and nothing
else). The methods alternate (the second round in reverse order) and every round must give the same count.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(1, str(ROOT))

from memory_speed.meters import RecordingMeter  # noqa: E402
from memory_speed.report import cpu_model  # noqa: E402

from side4video.backbones import create_backbone  # noqa: E402
from side4video.backbones.frozen import FrozenEncoder  # noqa: E402
from side4video.engine.memory import storage_pointers  # noqa: E402
from side4video.engine.step import StepParts, forward_loss  # noqa: E402
from side4video.models import SideInputs, count_parameters  # noqa: E402
from side4video.retrieval.model import CLIP_INIT_LOGIT_SCALE, RetrievalModel, RetrievalOutputs  # noqa: E402
from side4video.retrieval.similarity import mean_pooled_similarity  # noqa: E402
from side4video.retrieval.text import FrozenTextTower, create_text_tower  # noqa: E402
from side4video.tasks.retrieval import RetrievalTask  # noqa: E402

MIB = 2 ** 20
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "retrieval_memory.md"
BASELINE = "clip4clip_finetune"
# name → (label, the baseline its ratio is taken against)
METHODS: dict[str, tuple[str, str]] = {
    "side4video": ("Side4Video D={side_dim}, {sim_header} (text tower frozen)", BASELINE),
    "clip4clip_finetune": ("CLIP4Clip meanP, image tower fine-tuned (text tower frozen)", BASELINE),
    "clip4clip_frozen": ("CLIP4Clip meanP, frozen image tower + trainable Linear(E, E) (text frozen)", BASELINE),
    "clip4clip_frozen_scale": ("CLIP4Clip meanP, frozen towers, only the logit scale trains", BASELINE),
    "side4video+text": ("Side4Video D={side_dim}, {sim_header}, text tower trainable", BASELINE + "+text"),
    "clip4clip_finetune+text": ("CLIP4Clip meanP, both towers fine-tuned", BASELINE + "+text"),
}
CAPTIONS = ("a man is cooking pasta in a small kitchen", "two dogs run across a snowy field after a ball",
            "a woman plays the violin on a stage", "a red car drives along a coastal road at sunset")


def quiet() -> None:
    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    warnings.filterwarnings("ignore", category=FutureWarning)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------------------
# the CLIP4Clip baselines: duck-typed as RetrievalModel for the task's loss (tokenize, encode_text, similarity,
# logit_scale); they read SideInputs.frames (fine-tuning) or SideInputs.embedding (frozen tower) and tap no layer
# ------------------------------------------------------------------------------------------------------------------
class CLIP4ClipMeanP(nn.Module):
    """CLIP4Clip's meanP model: frame embeddings → cosine of the caption with the mean normalised frame.

    ``visual``: a trainable image tower (fine-tuning: the frames run through it with grad), or None: the frozen
    tower's embeddings come in ``SideInputs.embedding`` (computed under no-grad by the step's tap), through
    ``proj`` if given (a trainable ``Linear(E, E)``, identity at start)."""

    def __init__(self, text: FrozenTextTower, *, visual: nn.Module | None = None, embed_dim: int = 0,
                 projection: bool = False, max_words: int = 32):
        super().__init__()
        self.visual = visual
        self.proj = None
        if projection:
            self.proj = nn.Linear(embed_dim, embed_dim)
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(embed_dim))
                self.proj.bias.zero_()
        self.text = text if text.trainable else None          # a trainable tower is a submodule
        object.__setattr__(self, "frozen_text", None if text.trainable else text)
        self.logit_scale = nn.Parameter(torch.tensor([CLIP_INIT_LOGIT_SCALE]))
        self.max_words = max_words
        self.backbone_layers: list[int] = []
        self.needs_embedding = visual is None                   # frozen tower: the tap gives the embedding

    @property
    def text_tower(self) -> FrozenTextTower:
        return self.text if self.text is not None else self.frozen_text

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_tower.tokenize(captions, self.max_words)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None = None):
        return self.text_tower.encode(tokens, mask)

    def similarity(self, sentence, words, word_mask, frames, frame_mask=None) -> torch.Tensor:
        if frame_mask is None:
            frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        return mean_pooled_similarity(sentence, frames, frame_mask)

    def forward(self, inputs: SideInputs) -> RetrievalOutputs:
        frames = inputs.frames
        b, t = frames.shape[:2]
        if self.visual is not None:
            embedding = self.visual(frames.flatten(0, 1))
        else:
            embedding = inputs.embedding
            if self.proj is not None:
                embedding = self.proj(embedding.to(self.proj.weight.dtype))
        return RetrievalOutputs(frames=embedding.float().reshape(b, t, -1), logit_scale=self.logit_scale.exp(),
                                model=self)


# ------------------------------------------------------------------------------------------------------------------
# building and measuring
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Towers:
    """What the methods of one architecture share: the frozen image tower, the frozen text tower, and (built on
    first use) a trainable text tower."""
    arch: str
    backbone: FrozenEncoder
    text: FrozenTextTower
    precision: str
    quick_gelu: bool | None
    device: torch.device
    _trainable_text: FrozenTextTower | None = field(default=None, repr=False)

    def trainable_text(self) -> FrozenTextTower:
        if self._trainable_text is None:
            torch.manual_seed(1)
            self._trainable_text = create_text_tower(self.arch, False, trainable=True,
                                                     quick_gelu=self.quick_gelu).to(self.device)
        return self._trainable_text


def build_towers(arch: str, precision: str, device: torch.device, quick_gelu: bool | None = None) -> Towers:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        backbone = create_backbone(arch, False, precision=precision, quick_gelu=quick_gelu, device=device)
        torch.manual_seed(1)
        text = create_text_tower(arch, False, precision=precision, quick_gelu=quick_gelu).to(device)
    return Towers(arch, backbone, text, precision, quick_gelu, device)


@dataclass
class Method:
    name: str
    label: str
    model: nn.Module
    exclude: set[int]
    module_names: dict[int, str]

    @property
    def trainable(self) -> int:
        return count_parameters(self.model)


def build_method(name: str, towers: Towers, *, side_dim: int = 320, sim_header: str = "wti",
                 side_options: dict[str, Any] | None = None) -> Method:
    """One method's trainable model on the shared towers (seeded: the same weights every time)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    text = towers.trainable_text() if name.endswith("+text") else towers.text
    torch.manual_seed(2)
    backbone = towers.backbone
    if name.startswith("side4video"):
        model: nn.Module = RetrievalModel(backbone, text, sim_header=sim_header, side_dim=side_dim,
                                          **(side_options or {}))
    elif name.startswith("clip4clip_finetune"):
        # the frozen tower's own random weights, trainable and in fp32 (master weights; autocast under bf16)
        visual = copy.deepcopy(backbone.model.visual).float().requires_grad_(True)
        model = CLIP4ClipMeanP(text, visual=visual)
    else:
        model = CLIP4ClipMeanP(text, embed_dim=backbone.info.embed_dim, projection=name == "clip4clip_frozen")
    model = model.to(towers.device).train()
    label = METHODS[name][0].format(side_dim=side_dim, sim_header=sim_header)
    exclude = storage_pointers(backbone.model, towers.text.model, model,
                               towers._trainable_text.model if towers._trainable_text is not None else None)
    names: dict[int, str] = {}
    for root, module in (("model", model), ("image_tower", backbone.model.visual), ("text_tower", text.model)):
        for sub_name, sub in module.named_modules():
            names.setdefault(id(sub), f"{root}.{sub_name}" if sub_name else root)
    return Method(name, label, model, exclude, names)


def random_batch(towers: Towers, batch: int, frames: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Normalised-looking clips ``[B, T, 3, H, W]`` and one caption per clip (the same for every method)."""
    size = towers.backbone.info.image_size
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch, frames, 3, size, size, generator=generator).to(towers.device)
    captions = [CAPTIONS[i % len(CAPTIONS)] + ("" if i < len(CAPTIONS) else f" {i}") for i in range(batch)]
    return clips, captions


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def measure(method: Method, towers: Towers, clips: torch.Tensor, captions: list[str], precision: str,
            *, backward: bool = False, record: bool = True) -> dict[str, Any]:
    """One training forward and loss of ``method`` under the exact meter: saved bytes, storages, where they were
    saved (grouped by module), and with ``backward`` which parameters the gradient reached."""
    task = RetrievalTask(sim_header=getattr(method.model, "sim_header", "meanP"))
    parts = StepParts(backbone=towers.backbone, model=method.model, task=task)
    b = clips.shape[0]
    batch = task.train_batch({"caption_index": torch.arange(b), "video": torch.arange(b), "captions": captions},
                             clips, None, clips.device)
    meter = RecordingMeter(method.exclude, module_stack=[], record=record)

    def forward(inputs: SideInputs) -> RetrievalOutputs:
        with autocast(clips.device, precision):
            return method.model(inputs)

    start = time.perf_counter()
    with meter.measuring(method.module_names):
        loss = forward_loss(parts, batch, forward)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"saved": meter.bytes, "storages": len(meter.storages),
                              "params_excluded": sum(meter.excluded.values()), "forward_s": seconds,
                              "loss": float(loss.detach())}
    if record:
        result["by_module"] = group_by_module(meter.records.values())
    if backward:
        # which parameters the loss's gradient reaches (a check of the setup, not a training step: nothing is
        # accumulated into .grad, no optimizer runs; frozen parameters cannot be reached unless they require grad)
        trainable = [p for p in method.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, trainable, allow_unused=True)
        result["grad_reached"] = sum(g is not None for g in grads)
        result["grad_trainable"] = len(trainable)
        frozen = [*towers.backbone.model.parameters(), *towers.text.model.parameters()]
        result["grad_frozen"] = sum(p.requires_grad for p in frozen)
    del loss
    return result


def group_by_module(records) -> dict[str, int]:
    """Bytes by where they were saved: the model's parts, the towers' block stacks (block index dropped), or the
    loss and similarity (no module)."""
    groups: dict[str, int] = {}
    for rec in records:
        module = rec["module"] or "no module"
        module = re.sub(r"\.\d+(?=\.|$)", ".*", module)
        key = ".".join(module.split(".")[:3])
        groups[key] = groups.get(key, 0) + rec["bytes"]
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def measure_arch(arch: str, *, frames: int = 12, batch: int = 2, methods: Sequence[str] = tuple(METHODS),
                 precision: str = "fp32", device: str | torch.device = "cpu", rounds: int = 2, side_dim: int = 320,
                 sim_header: str = "wti", quick_gelu: bool | None = None, backward: bool = False,
                 record: bool = True, side_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every method of ``methods`` on ``arch``, ``rounds`` times, alternating (odd rounds in reverse order); one row
    per method with its saved bytes (per clip), trainable parameters, and whether every round agreed."""
    device = torch.device(device)
    towers = build_towers(arch, precision, device, quick_gelu)
    clips, captions = random_batch(towers, batch, frames)
    built = {name: build_method(name, towers, side_dim=side_dim, sim_header=sim_header, side_options=side_options)
             for name in methods}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    for r in range(rounds):
        order = list(methods) if r % 2 == 0 else list(reversed(methods))
        for name in order:
            result = measure(built[name], towers, clips, captions, precision, backward=backward and r == 0,
                             record=record and r == 0)
            runs[name].append(result)
            progress(f"[{arch} {precision}] round {r + 1} {name}: {result['saved'] / batch / MIB:.2f} MiB/clip "
                     f"({result['forward_s']:.1f} s)")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    rows = []
    for name in methods:
        first = runs[name][0]
        counts = [run["saved"] for run in runs[name]]
        row = {"method": name, "label": built[name].label, "arch": arch, "frames": frames, "batch": batch,
               "precision": precision, "saved": first["saved"], "saved_per_clip": first["saved"] / batch,
               "storages": first["storages"], "rounds": counts, "deterministic": len(set(counts)) == 1,
               "trainable": built[name].trainable, "baseline": METHODS[name][1],
               "forward_s": [run["forward_s"] for run in runs[name]],
               "image_size": towers.backbone.info.image_size, "quick_gelu": towers.backbone.info.quick_gelu}
        for key in ("by_module", "grad_reached", "grad_trainable", "grad_frozen"):
            if key in first:
                row[key] = first[key]
        rows.append(row)
    by_name = {row["method"]: row for row in rows}
    for row in rows:
        base = by_name.get(row["baseline"])
        row["ratio"] = row["saved"] / base["saved"] if base is not None and base["saved"] else None
    return rows


# ------------------------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------------------------
def environment() -> dict[str, str]:
    import open_clip
    cpu = cpu_model(platform.processor() or platform.machine())
    try:
        date = subprocess.run(["date"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        date = datetime.datetime.now().isoformat(timespec="seconds")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"date": date, "machine": f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, GPU {gpu}",
            "torch": torch.__version__, "open_clip": open_clip.__version__, "python": platform.python_version(),
            "threads": str(torch.get_num_threads())}


def size(nbytes: float) -> str:
    """MiB to two decimals, KiB below 1 MiB, bytes below 1 KiB (the frozen-tower rows keep a few KiB)."""
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    return f"{nbytes / MIB:.2f} MiB" if nbytes >= MIB else f"{nbytes / 1024:.2f} KiB"


def params(count: int) -> str:
    return f"{count / 1e6:.2f} M" if count >= 10_000 else str(count)


def render(rows: list[dict[str, Any]], env: dict[str, str], command: str, goal: float,
           peak_rss: int | None = None) -> str:
    activation = sorted({"QuickGELU" if row["quick_gelu"] else "GELU" for row in rows})
    precision = sorted({row["precision"] for row in rows})
    lines = ["# Retrieval training memory: bytes saved for backward per clip", "",
             f"command: `{command}`", "",
             f"date: {env['date']}; machine: {env['machine']}; torch {env['torch']}, open_clip {env['open_clip']}, "
             f"Python {env['python']}, {env['threads']} torch thread(s); {'/'.join(precision)}, "
             f"{'/'.join(activation)} towers, random weights.", "",
             "The same clips and captions for every method; the retrieval task's own loss "
             "(`RetrievalTask.loss`: symmetric InfoNCE over the batch, learnt logit scale) through the engine's "
             "`forward_loss`. \"Saved\" is exact: the distinct storages autograd keeps for backward during the "
             "forward and the loss (`SavedTensorMeter`; parameters and buffers of every tower and model left out), "
             "divided by the batch; it does not depend on the machine or its load. The methods alternated over the "
             "rounds (the second in reverse order); \"same every round\" checks that the counts agree. "
             "\"Weights + grads + AdamW\" is 16 bytes per trainable parameter (fp32 weight, gradient, two "
             "moments): not measured, the fixed cost a batch adds its saved bytes to.", "",
             "| method | arch | frames | saved / clip | vs CLIP4Clip FT | trainable | weights + grads + AdamW "
             "| same every round |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = f"{row['ratio']:.3f}x" if row["ratio"] is not None else "–"
        if row["ratio"] is not None and 0 < row["ratio"] < 0.001:
            ratio = f"{row['ratio']:.1e}x"
        if row["method"] == "side4video" and row["ratio"] is not None:
            ratio = f"**{ratio}**"
        base = "" if row["baseline"] == BASELINE else " (vs FT + text)"
        lines.append(f"| {row['label']} | {row['arch']} | {row['frames']} | {size(row['saved_per_clip'])} "
                     f"| {ratio}{base} | {params(row['trainable'])} | {size(16 * row['trainable'])} | "
                     f"{'yes' if row['deterministic'] else 'NO: ' + str(row['rounds'])} |")
    lines += ["", "## Goal", ""]
    for arch in dict.fromkeys(row["arch"] for row in rows):
        side = next((r for r in rows if r["arch"] == arch and r["method"] == "side4video"), None)
        if side is None or side["ratio"] is None:
            continue
        verdict = "met" if side["ratio"] <= goal else "NOT met"
        lines.append(f"- {arch}: side network / CLIP4Clip fine-tuning = {side['ratio']:.3f}x of the saved bytes "
                     f"(goal ≤ {goal}x: **{verdict}**; the paper's own ratio, 5.8 / 8.2 = 0.71x, is of total GPU "
                     f"memory).")
    lines += ["", "## Caveats", "",
              "- The frozen CLIP4Clip with nothing but the logit scale trainable keeps only the `[N, N]` similarity "
              "for backward (a few bytes); the `clip4clip_frozen` row trains a `Linear(E, E)` (identity at start) "
              "on the frozen frame embeddings instead, which keeps those embeddings (`[T, E]` per clip).",
              "- The main rows keep the text tower frozen for every method (like for like). CLIP4Clip trains both "
              "towers and the Side4Video reference trains the text tower at 1e-3 × lr: the `+text` rows. The text "
              "tower here runs the full 77-token context (captions truncated to 32 tokens, zero-padded, as "
              "`FrozenTextTower.tokenize` does), where the reference slices the context to `max_words` = 32, so "
              "the text tower's share of the `+text` rows is about 77 / 32 = 2.4x the reference's.",
              "- Random weights build GELU towers (`create_backbone(pretrained=False)`); OpenAI's weights use "
              "QuickGELU (`--quick-gelu`), which keeps one more `[tokens, 4W]` tensor per block of a *trained* "
              "tower (the fine-tuning rows grow; the side network's frozen tower keeps nothing).",
              "- The side network's count includes the frozen tower's tapped tokens it reads (kept in the "
              "backbone's precision) and the zero-initialised `side_proj`'s path; the paper's 5.8 / 8.2 GB is the "
              "total GPU memory of a training run (weights, gradients, optimizer state, workspace and activations "
              "together), so the two ratios measure different things.",
              "- Counting needs the forward only (no backward ran for the table unless `--backward`); "
              "`tests/benchmarks/test_bench_retrieval_memory.py` runs a backward on the tiny backbone and checks "
              "that the gradient reaches every trainable tensor and no frozen one."]
    lines += ["", "## Where the bytes are saved (first round)", "",
              "Module in whose forward each storage was first saved (block indices merged as `*`; `model`: the "
              "model's own code outside its submodules, e.g. the logit scale; \"no module\": the similarity and "
              "the loss, which the task computes outside the model's forward). The side network's `taps` are the "
              "frozen tower's tokens it reads; `model.side` alone is its stem (it keeps the input pixels).", ""]
    for row in rows:
        if "by_module" not in row:
            continue
        parts = ", ".join(f"{key} {size(value / row['batch'])}" for key, value in row["by_module"].items()
                          if value > 0)
        lines.append(f"- {row['arch']} `{row['method']}` (per clip): {parts or 'nothing'}")
    grads = [row for row in rows if "grad_reached" in row]
    if grads:
        lines += ["", "Backward check (`--backward`): the gradient reached "
                  + "; ".join(f"{r['arch']} {r['method']} {r['grad_reached']}/{r['grad_trainable']} trainable "
                              f"tensors, {r['grad_frozen']} frozen" for r in grads) + "."]
    lines += ["", "Forward seconds per round (CPU timings depend on the load and are not the point): "
              + "; ".join(f"{r['arch']} {r['method']} " + "/".join(f"{s:.1f}" for s in r["forward_s"])
                          for r in rows) + "."]
    if peak_rss:
        lines += ["", f"Peak resident set of the whole run (every method and arch in one process): "
                      f"{peak_rss / MIB:.0f} MiB."]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["ViT-B/32", "ViT-B/16"])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2, help="clips (one caption each)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: frozen towers in bf16, the trained parts under bf16 autocast")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--side-dim", type=int, default=320)
    parser.add_argument("--sim-header", default="wti", choices=["wti", "meanP"])
    parser.add_argument("--quick-gelu", action="store_true",
                        help="QuickGELU towers (what OpenAI weights use); default: create_backbone's random-weight "
                             "default (GELU)")
    parser.add_argument("--backward", action="store_true", help="also run one backward per method (a check)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--goal", type=float, default=0.4)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="Markdown file, or - for stdout only")
    parser.add_argument("--append", action="store_true",
                        help="append to --output (a second run, e.g. --quick-gelu) instead of replacing it")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument("--render", default=None, metavar="JSON", help="re-render a --json file; measure nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.render:     # re-render a --json file (no measuring)
        saved = json.loads(Path(args.render).read_text())
        rows, env, command, peak = saved["rows"], saved["env"], saved["command"], saved.get("peak_rss")
    else:
        quiet()
        if args.threads:
            torch.set_num_threads(args.threads)
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        rows = []
        for arch in args.archs:
            rows += measure_arch(arch, frames=args.frames, batch=args.batch, methods=args.methods,
                                 precision=args.precision, device=device, rounds=args.rounds,
                                 side_dim=args.side_dim, sim_header=args.sim_header,
                                 quick_gelu=True if args.quick_gelu else None, backward=args.backward)
        command = ("python benchmarks/bench_retrieval_memory.py " + " ".join(
            shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))).strip()
        env = environment()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows, "env": env, "command": command,
                                                   "peak_rss": peak}, indent=1))
    text = render(rows, env, command, args.goal, peak)
    print(text)
    if args.output != "-":
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.append and out.is_file():
            text = out.read_text() + "\n---\n\n" + text.replace("# Retrieval training memory", "## Another run",
                                                                   1).replace("\n## ", "\n### ")
        out.write_text(text)
        progress(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
