"""What one worker measures (a method's steps, the scaling rows, the multi-view test path) and how workers run:
each in a fresh process (``--isolate``: forked on CPU, spawned on CUDA) or in this one."""
from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from side4video.models import create_model, model_inputs
from side4video.tasks import autocast_context, forward_views

from .meters import HostPeak, RecordingMeter, group_records
from .methods import Method, build_frozen_backbone, check_size, method_label, quiet, random_clips, run_device

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "benchmarks" / "train_memory_speed.py"    # what a spawned worker runs (with --_worker)
MIB = 2 ** 20


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def task_method(cfg: dict[str, Any], name: str, precision: str, runtime_rss: int) -> dict[str, Any]:
    """One method: the saved bytes of its first step, then ``steps`` timed steps each paired with a floor forward,
    and the peak memory over all of them."""
    device = run_device(cfg)
    method = Method(name, cfg, precision, device)
    info = method.backbone.info
    check_size(cfg, info)
    # the probe's BatchNorm over clips needs two of them in training mode
    batch = max(cfg["batch"], 2) if method.kind == "probe" else cfg["batch"]
    frames, labels = random_clips(cfg, batch, cfg["frames"], info, device)
    host = HostPeak()
    # The peak covers every step from here on (the first without, the later ones with AdamW state), not the
    # construction (open_clip builds the text tower before it is dropped). Memory freed by an earlier step and
    # kept by the allocator is reused, so a resident-set peak over all steps is not inflated by it.
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        built = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        built = host.current()
        host.reset()
    # warm-up; the first step is the measured one for saved bytes (the graph is the same every step)
    meter = RecordingMeter(method.exclude, module_stack=[], record=cfg["breakdown"] > 0)
    method.step(frames, labels, meter)
    for _ in range(max(cfg["warmup"], 1) - 1):
        method.step(frames, labels)
    steps, floors, ratios, phase_rows = [], [], [], []
    for i in range(cfg["steps"]):
        order = [0, 1] if i % 2 == 0 else [1, 0]   # alternate, so that neither always runs on a warmer cache
        t_step = t_floor = 0.0
        for which in order:
            if which == 0:
                t0 = time.perf_counter()
                method.floor(frames)
                t_floor = time.perf_counter() - t0
            else:
                phases = method.step(frames, labels)
                t_step = phases["total"]
                phase_rows.append(phases)
        steps.append(t_step)
        floors.append(t_floor)
        ratios.append(t_step / t_floor)
    if device.type == "cuda":
        peak_abs = torch.cuda.max_memory_allocated()
        peak = peak_abs - method.backbone_only_bytes()
        peak_method = "torch.cuda.max_memory_allocated"
    else:
        peak_abs = host.peak()
        peak = peak_abs - runtime_rss - method.backbone_only_bytes()
        peak_method = host.method
    phases = {key: statistics.median(row[key] for row in phase_rows) for key in phase_rows[0]}
    result = {
        "method": name, "label": method_label(name, cfg), "precision": precision, "batch": batch,
        "frames": cfg["frames"], "trainable": method.trainable, "param_grad_adam": method.trainable * 16,
        "saved": meter.bytes, "saved_storages": len(meter.storages),
        "saved_params_excluded": sum(meter.excluded.values()),
        "peak": peak, "peak_abs": peak_abs, "after_build": built - (0 if device.type == "cuda" else runtime_rss),
        "runtime_rss": runtime_rss, "peak_method": peak_method,
        "step_s": statistics.median(steps), "steps_s": steps, "floor_s": statistics.median(floors),
        "floors_s": floors, "time_vs_floor": statistics.median(ratios), "ratios": ratios, "phases": phases,
    }
    if cfg["breakdown"] > 0:
        result["breakdown"] = group_records(list(meter.records.values()), cfg["breakdown"])
    if cfg.get("profile", 0) > 0 and method.kind != "floor":
        result["profile"] = profile_step(method, frames, labels, cfg["profile"])
    method.close()
    return result


def profile_step(method: Method, frames: torch.Tensor, labels: torch.Tensor, top: int) -> list[dict[str, Any]]:
    """One more step under ``torch.profiler``: the ops with the largest self time (after the timed steps)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if method.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        method.step(frames, labels)
    device = method.device.type == "cuda"
    rows = []
    for event in prof.key_averages():
        self_us = event.self_device_time_total if device else event.self_cpu_time_total
        rows.append({"op": event.key, "count": event.count, "self_s": self_us / 1e6})
    total = sum(r["self_s"] for r in rows)
    rows.sort(key=lambda r: -r["self_s"])
    for r in rows:
        r["share"] = r["self_s"] / total if total else 0.0
    return rows[:top]


def task_scaling(cfg: dict[str, Any], precision: str, names: list[str]) -> list[dict[str, Any]]:
    """Exact saved bytes of one forward and loss for each frames / batch setting (no backward, no timing)."""
    device = run_device(cfg)
    backbone = build_frozen_backbone(cfg, precision, device)
    check_size(cfg, backbone.info)
    shapes = sorted({(1, t) for t in cfg["scale_frames"]} | {(b, cfg["frames"]) for b in cfg["scale_batch"]})
    methods = [Method(name, cfg, precision, device, backbone=backbone) for name in names]
    rows = []
    for batch, frames_n in shapes:
        frames, labels = random_clips(cfg, batch, frames_n, backbone.info, device)
        shared = {}
        for method in methods:
            inputs = None
            # one tap per set of layers (as the ablation runner shares it); a plugin that changes the pixels or
            # the inputs (SV-Mix) needs its own pass, as in the step
            if method.model is not None and not method.plugins:
                key = (tuple(method.model.backbone_layers), bool(method.model.needs_embedding))
                if key not in shared:
                    shared[key] = model_inputs(backbone, method.model, frames)
                inputs = shared[key]
            saved = method.saved_bytes_only(frames, labels, inputs)
            rows.append({"method": method.name, "precision": precision, "batch": batch, "frames": frames_n,
                         "saved": saved})
            progress(f"[{precision}] scaling {method.name} batch {batch} x {frames_n} frames: "
                     f"{saved / MIB:.1f} MiB saved")
        del shared
        gc.collect()
    for method in methods:
        method.close()
    return rows


def task_multiview(cfg: dict[str, Any], precision: str, chunk: int, runtime_rss: int) -> dict[str, Any]:
    """3 crops x 10 clips of one video through ``forward_views`` (the evaluation path), at most ``chunk`` views per
    forward: peak memory and time."""
    device = run_device(cfg)
    backbone = build_frozen_backbone(cfg, precision, device)
    info = backbone.info
    torch.manual_seed(0)
    model = create_model("side4video", info, cfg["classes"], side_dim=cfg["side_dim"]).to(device).eval()
    views = cfg["crops"] * cfg["clips"]
    size = info.image_size
    frames = torch.randn(1, views, cfg["frames"], 3, size, size).to(device)
    host = HostPeak()
    with autocast_context(device, precision):   # warm-up on one view
        forward_views(backbone, model, frames[:, :1], max_views_per_forward=chunk)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        host.reset()
    t0 = time.perf_counter()
    with autocast_context(device, precision):
        logits = forward_views(backbone, model, frames, max_views_per_forward=chunk)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak_abs = torch.cuda.max_memory_allocated()
        peak = peak_abs
    else:
        peak_abs = host.peak()
        peak = peak_abs - runtime_rss
    assert logits.shape == (1, views, cfg["classes"])
    return {"precision": precision, "views": views, "crops": cfg["crops"], "clips": cfg["clips"], "chunk": chunk,
            "frames": cfg["frames"], "peak": peak, "peak_abs": peak_abs, "seconds": seconds,
            "views_per_s": views / seconds}


def run_task(spec: dict[str, Any]) -> Any:
    """Entry point of a worker: ``spec = {"task": ..., "cfg": ..., ...}``."""
    quiet()
    runtime_rss = spec.get("runtime_rss") or HostPeak.current()
    cfg = spec["cfg"]
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    if spec["task"] == "method":
        return task_method(cfg, spec["method"], spec["precision"], runtime_rss)
    if spec["task"] == "scaling":
        return task_scaling(cfg, spec["precision"], spec["methods"])
    if spec["task"] == "multiview":
        return task_multiview(cfg, spec["precision"], spec["chunk"], runtime_rss)
    raise ValueError(spec["task"])


class Runner:
    """Runs worker tasks in a fresh process each (``isolate``) or in this process.

    Fresh processes are forked from this one on CPU (it has imported everything but run no tensor op, so no
    OpenMP pool exists yet and the imports are not paid again); on CUDA they are spawned (CUDA does not survive a
    fork): they run the entry script with ``--_worker``.
    """

    def __init__(self, isolate: bool, device_type: str, threads: int | None):
        self.isolate = isolate
        self.fork = isolate and device_type == "cpu" and hasattr(os, "fork")
        self.threads = threads
        self.runtime_rss: int | None = None

    def __call__(self, spec: dict[str, Any]) -> Any:
        if not self.isolate:
            if self.runtime_rss is None:
                self.runtime_rss = HostPeak.current()
            gc.collect()
            return run_task(dict(spec, runtime_rss=self.runtime_rss))
        with tempfile.TemporaryDirectory() as tmp:
            result_path = Path(tmp) / "result.json"
            if self.fork:
                return self._forked(spec, result_path)
            spec_path = Path(tmp) / "spec.json"
            spec_path.write_text(json.dumps(spec))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            env.setdefault("DS_ACCELERATOR", "cpu")
            proc = subprocess.run([sys.executable, str(ENTRY), "--_worker", str(spec_path),
                                   "--_result", str(result_path)], env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"worker for {spec['task']} {spec.get('method', '')} failed "
                                   f"(exit {proc.returncode})")
            return json.loads(result_path.read_text())

    def _forked(self, spec: dict[str, Any], result_path: Path) -> Any:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:   # the child: measure, write, leave without running the parent's cleanup
            code = 1
            try:
                result = run_task(dict(spec, runtime_rss=HostPeak.current()))
                result_path.write_text(json.dumps(result))
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise RuntimeError(f"worker for {spec['task']} {spec.get('method', '')} failed (exit {code})")
        return json.loads(result_path.read_text())


def worker_main(spec_path: str, result_path: str) -> None:
    """A spawned worker. Everything it uses was imported with the entry script, before any tensor exists: its
    resident set now is the runtime's, what the peak is measured against."""
    runtime_rss = HostPeak.current()
    spec = json.loads(Path(spec_path).read_text())
    spec["runtime_rss"] = runtime_rss
    result = run_task(spec)
    Path(result_path).write_text(json.dumps(result))
