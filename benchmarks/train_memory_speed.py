"""Training memory and speed per step: the Side4Video side network against full fine-tuning, an adapter baseline,
the linear probe and the frozen forward, all measured in one run.

    python benchmarks/train_memory_speed.py --arch ViT-B-16 --frames 8 --size 224 --batch 2 \
        --precision fp32 bf16 [--methods all] [--steps 3] [--json out.json] [--output out.md]
    python benchmarks/train_memory_speed.py --smoke          # tiny backbone, every method, a few seconds

The training step measured is the package's one step, ``side4video.engine.step.train_step`` (what the trainer and
the ablation runner run): plugins → frozen-backbone tap → model under autocast → the classification task's loss
(+ the plugins' terms) → backward → AdamW step, on the plain-torch backend ``TorchBackend`` (fp32 or bf16
autocast; DeepSpeed is not in the loop). The full fine-tuning and adapter baselines are small models that tap no
layer and read the frames, so the same step trains them. What is measured for every method, per training step
(random weights):

* **saved for backward** — exact and device-independent: the distinct tensor storages autograd keeps during the
  forward pass and loss (the step's ``measure``), seen through ``torch.autograd.graph.saved_tensors_hooks``,
  deduplicated by storage pointer, each storage's full size counted once. Parameters and buffers are left out (they
  live anyway and are counted in "params+grads+AdamW"); autocast's low-precision copies of the weights are counted
  (they are extra memory). Inputs that backward needs (the frozen backbone's tapped tokens, a checkpointed block's
  input) are counted.
* **peak memory** — CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps. CPU: the process's peak
  resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before the timed steps) minus the resident set of
  the runtime (after the imports, before any tensor), in a fresh process per method (``--isolate``, the default:
  forked on CPU, spawned on CUDA; ``--no-isolate``, used by ``--smoke``, is approximate: freed memory kept by
  the allocator of an earlier method hides part of a later one's peak). The peak is taken over all steps (warm-up
  and timed) after the models are built. It includes everything: the frozen backbone's weights, the trainable
  weights, gradients, AdamW state, activations, the allocator's slack and, on CPU, the code pages and buffers
  the first kernels fault in (the floor row shows that constant). Full fine-tuning does not need the frozen
  backbone that the paired floor timing uses: its weights are subtracted.
* **step time** — median of ``--steps`` timed steps (the whole ``train_step``) after ``--warmup`` warm-up steps;
  every timed step is paired with one frozen inference forward (the floor) in the same process, alternating the
  order, and the ratio to the floor is the median of the per-pair ratios (robust to a machine whose load changes
  during the run). Phases (tap, model forward, backward, optimizer, the rest) are timed inside that step by a timing
  ``TorchBackend`` and a timing clip assembler (``memory_speed/methods.py``).

Methods: ``side``/``light`` (Side4Video, D=320 / D=128), each plain, ``-ckpt`` (``grad_checkpointing``) and
``-norecompute`` (``recompute=False``: norms, GELU, the depthwise conv and the tap LayerNorm outputs are kept
instead of recomputed in backward); ``side-svmix`` (the SV-Mix plugin); ``full_ft`` (the same ViT image tower
trainable, frame-averaged embeddings → linear); ``adapter`` (ST-Adapter-style bottleneck adapters before every
block of the frozen backbone, gradients through it); ``probe`` (the frozen-feature linear probe, ``frame_avg``);
``floor`` (the frozen backbone's inference forward, no grad); opt-in ``side-compile``. Then bytes-only scaling
rows (frames, batch) and the multi-view test path.

The pieces live in ``benchmarks/memory_speed/`` (methods, meters, workers, report); this file is the command.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

# Run as a script from anywhere, or loaded by path (the tests): the package and this folder's modules importable.
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(REPO), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
import torch  # noqa: E402
from memory_speed.methods import DEFAULT_SCALING, METHODS, OPT_IN  # noqa: E402
from memory_speed.report import derive, environment, to_markdown  # noqa: E402
from memory_speed.workers import MIB, Runner, progress, worker_main  # noqa: E402

from side4video.backbones import describe_backbone  # noqa: E402

TINY_CLIP = REPO / "side4video" / "assets" / "tiny_clip.json"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "train_memory_speed.md"

__all__ = ["METHODS", "OPT_IN", "DEFAULT_SCALING", "parse_args", "main"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-16", help="backbone (random weights); --smoke: tiny_clip.json")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="image size (must be the backbone's; checked)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=174)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--methods", nargs="+", default=["all"],
                        help=f"any of {', '.join(METHODS)} (comma or space separated), or 'all'")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps (the first is the saved-bytes one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--side-dim", type=int, default=320, help="D of the side rows (--smoke: 64)")
    parser.add_argument("--light-dim", type=int, default=128, help="D of the light rows (--smoke: 32)")
    parser.add_argument("--adapter-ratio", type=float, default=0.25, help="adapter bottleneck width / W")
    parser.add_argument("--scaling-methods", nargs="+", default=DEFAULT_SCALING)
    parser.add_argument("--scale-frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--scale-batch", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--scaling-precision", nargs="+", default=None,
                        help="precisions of the scaling rows (default: all of --precision)")
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--crops", type=int, default=3)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--eval-chunks", type=int, nargs="+", default=[10],
                        help="max views per forward of the multi-view rows (test.py's default is 64)")
    parser.add_argument("--multiview-precision", nargs="+", default=None, help="default: the first --precision")
    parser.add_argument("--no-multiview", action="store_true")
    parser.add_argument("--breakdown", type=int, default=12, help="largest saved-tensor groups to list (0: off)")
    parser.add_argument("--breakdown-methods", nargs="+", default=["side", "side-ckpt", "light"])
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile one more step per method and list its N ops with the largest self time")
    parser.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                        help="one fresh subprocess per method (default, except --smoke)")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false")
    parser.add_argument("--smoke", action="store_true", help="tiny backbone, 1 step, every method: seconds")
    parser.add_argument("--json", default=None, help="write the results as JSON here (updated after every task)")
    parser.add_argument("--output", default=None, help=f"Markdown file (default {DEFAULT_OUTPUT.relative_to(REPO)}; "
                        "--smoke or '-': printed only)")
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="only re-render the Markdown of an earlier --json file (to --output, else stdout)")
    parser.add_argument("--resume", default=None, metavar="JSON",
                        help="continue the interrupted run whose --json this is (same settings): measure only what "
                             "it lacks")
    parser.add_argument("--redo", nargs="+", default=[], help="with --resume: measure these again "
                        "(METHOD, PRECISION:METHOD, 'scaling', 'multiview')")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    methods = [m for item in args.methods for m in item.split(",") if m]
    args.methods = [m for m in METHODS if m not in OPT_IN] if "all" in methods else methods
    unknown = [m for m in args.methods + args.scaling_methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if args.smoke:
        args.arch = str(TINY_CLIP)
        args.steps, args.warmup = 1, 1
        args.batch = 2 if args.batch == parser.get_default("batch") else args.batch
        args.scale_frames = [4, 8]
        args.side_dim = 64 if args.side_dim == parser.get_default("side_dim") else args.side_dim
        args.light_dim = 32 if args.light_dim == parser.get_default("light_dim") else args.light_dim
        args.scale_batch = [1, 2, 4]
        args.frames = 4 if args.frames == parser.get_default("frames") else args.frames
        args.clips = 2 if args.clips == parser.get_default("clips") else args.clips
        args.eval_chunks = [4] if args.eval_chunks == parser.get_default("eval_chunks") else args.eval_chunks
        if args.isolate is None:
            args.isolate = False
        if args.threads is None:
            args.threads = 1   # tiny ops: a second thread only adds synchronisation (and stalls on a busy machine)
    if args.isolate is None:
        args.isolate = True
    if "full_ft" not in args.methods:
        warnings.warn("without full_ft there are no ratios to full fine-tuning", stacklevel=2)
    if "floor" in args.methods:   # the floor last: its row restates the paired floor
        args.methods = [m for m in args.methods if m != "floor"] + ["floor"]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._worker:
        worker_main(args._worker, args._result)
        return {}
    if args.render:
        results = json.loads(Path(args.render).read_text())
        derive(results)
        text = to_markdown(results)
        if args.output and args.output != "-":
            Path(args.output).write_text(text)
        else:
            print(text)
        return results
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, argv)
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")   # a spawned worker inherits it (see Runner)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = describe_backbone(args.arch)
    if args.size and args.size != info.image_size:
        raise SystemExit(f"--size {args.size}: backbone {info.arch} takes {info.image_size} px images")
    cfg = {"arch": args.arch, "arch_label": "tiny_clip.json" if args.smoke else info.arch, "frames": args.frames,
           "size": args.size, "size_used": info.image_size, "batch": args.batch, "classes": args.classes,
           "steps": args.steps, "warmup": args.warmup, "device": args.device, "threads": args.threads,
           "adapter_ratio": args.adapter_ratio, "side_dim": args.side_dim, "light_dim": args.light_dim,
           "scale_frames": args.scale_frames, "scale_batch": args.scale_batch,
           "crops": args.crops, "clips": args.clips, "breakdown": args.breakdown,
           "breakdown_methods": args.breakdown_methods, "isolate": args.isolate, "smoke": args.smoke,
           "profile": args.profile}
    results: dict[str, Any] = {"config": cfg, "environment": environment(cfg, argv), "methods": {}, "scaling": [],
                               "multiview": []}
    redo = {item for entry in args.redo for item in entry.split(",") if item}
    if args.resume:
        # continue an interrupted run: keep what it measured (same settings), measure the rest (and --redo)
        earlier = json.loads(Path(args.resume).read_text())
        differing = {k for k in cfg if k not in ("isolate", "profile") and earlier["config"].get(k) != cfg[k]}
        if differing:
            raise SystemExit(f"--resume {args.resume}: settings differ ({', '.join(sorted(differing))})")
        resumed = earlier["environment"].setdefault("resumed", [])
        resumed.append({k: results["environment"][k] for k in ("command", "date", "loadavg_start")})
        results["environment"] = earlier["environment"]
        results["methods"] = {p: {n: r for n, r in rows.items() if n not in redo and f"{p}:{n}" not in redo}
                              for p, rows in earlier["methods"].items()}
        results["scaling"] = [r for r in earlier.get("scaling", []) if "scaling" not in redo]
        results["multiview"] = [r for r in earlier.get("multiview", []) if "multiview" not in redo]
        results["peak_method"] = earlier.get("peak_method")
    runner = Runner(args.isolate, results["environment"]["device"], args.threads)
    gc.collect()
    gc.freeze()   # what exists now is never garbage: later collections only walk the benchmark's own objects
    output = (None if args.output == "-" else Path(args.output) if args.output
              else None if args.smoke else DEFAULT_OUTPUT)

    def save() -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=1))

    started = time.perf_counter()
    for precision in args.precision:
        rows = results["methods"].setdefault(precision, {})
        for name in args.methods:
            if name in rows:
                continue
            row = runner({"task": "method", "cfg": cfg, "method": name, "precision": precision})
            rows[name] = row
            results["peak_method"] = row["peak_method"]
            progress(f"[{precision}] {name}: saved {row['saved'] / MIB:.1f} MiB, peak {row['peak'] / MIB:.0f} MiB, "
                     f"step {row['step_s']:.2f} s, {row['time_vs_floor']:.2f}x floor "
                     f"({time.perf_counter() - started:.0f} s elapsed)")
            save()
    if not args.no_scaling:
        for precision in args.scaling_precision or args.precision:
            if any(r["precision"] == precision for r in results["scaling"]):
                continue
            results["scaling"] += runner({"task": "scaling", "cfg": cfg, "precision": precision,
                                          "methods": args.scaling_methods})
            save()
    if not args.no_multiview:
        for precision in args.multiview_precision or args.precision[:1]:
            for chunk in args.eval_chunks:
                if any(r["precision"] == precision and r["chunk"] == chunk for r in results["multiview"]):
                    continue
                mv = runner({"task": "multiview", "cfg": cfg, "precision": precision, "chunk": chunk})
                results["multiview"].append(mv)
                progress(f"[{precision}] multi-view {mv['views']} views, chunk {chunk}: peak {mv['peak'] / MIB:.0f} "
                         f"MiB, {mv['seconds']:.1f} s")
                save()
    derive(results)
    try:
        results["environment"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    results["environment"]["wall_s"] = time.perf_counter() - started
    save()
    gc.unfreeze()
    text = to_markdown(results)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    return results


if __name__ == "__main__":
    main()
