"""The report: the run's environment, the derived ratios and goals, and the Markdown (which ``--render`` rebuilds
from a ``--json`` file alone)."""
from __future__ import annotations

import datetime
import importlib.metadata as md
import os
import platform
import shlex
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from .methods import run_device

MIB = 2 ** 20

# The goals: (what, precision, method, quantity, bound).
GOALS = [
    ("saved bytes per clip, side D={side_dim} (fp32, plain) vs full fine-tuning", "fp32", "side", "saved_vs_ft", 0.35),
    ("saved bytes per clip, side D={side_dim} + checkpointing (fp32) vs full fine-tuning", "fp32", "side-ckpt",
     "saved_vs_ft", 0.10),
    ("saved bytes per clip, side D={side_dim} + checkpointing, bf16 [MiB]", "bf16", "side-ckpt",
     "saved_per_clip_mib", 80.0),
    ("step time vs frozen forward, side D={side_dim}", "fp32", "side", "time_vs_floor", 1.7),
    ("step time vs frozen forward, light D={light_dim}", "fp32", "light", "time_vs_floor", 1.3),
    ("step time vs frozen forward, side D={side_dim} + checkpointing", "fp32", "side-ckpt", "time_vs_floor", 2.0),
    ("step time vs frozen forward, light D={light_dim} + checkpointing", "fp32", "light-ckpt", "time_vs_floor", 2.0),
]


def cpu_model(default: str) -> str:
    """The CPU's model name from /proc/cpuinfo, else ``default`` (no /proc: another OS)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def environment(cfg: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """Machine, versions, command and start time of the run."""
    versions = {}
    for dist in ("torch", "open_clip_torch", "timm", "deepspeed"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    device = run_device(cfg)
    if device.type == "cuda":
        machine = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        cpu = cpu_model(platform.processor() or "")
        machine = f"CPU {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"machine": machine, "device": device.type, "versions": versions,
            "command": "python benchmarks/train_memory_speed.py " + " ".join(shlex.quote(a) for a in argv),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "loadavg_start": load, "python": platform.python_version()}


def _mib(value: float) -> str:
    value = value / MIB
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 1 else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x" if value >= 0.01 or value == 0 else f"{value:.3f}x"


def derive(results: dict[str, Any]) -> None:
    """Ratios to full fine-tuning and per-clip numbers, in place."""
    for rows in results["methods"].values():
        ft = rows.get("full_ft")
        for row in rows.values():
            row["saved_per_clip"] = row["saved"] / row["batch"]
            row["saved_per_clip_mib"] = row["saved_per_clip"] / MIB
            row["saved_vs_ft"] = (row["saved_per_clip"] / (ft["saved"] / ft["batch"])
                                  if ft and ft["saved"] else None)
            row["peak_vs_ft"] = (row["peak"] / ft["peak"] if ft and ft["peak"] > 0 and ft["batch"] == row["batch"]
                                 else None)
            row["clips_per_s"] = row["batch"] / row["step_s"] if row["step_s"] > 0 else None
    scaling = results.get("scaling", [])
    slopes = []
    by_key = defaultdict(dict)
    for row in scaling:
        by_key[(row["precision"], row["method"])][(row["batch"], row["frames"])] = row["saved"]
    cfg = results["config"]
    for (precision, name), table in by_key.items():
        entry = {"precision": precision, "method": name}
        for axis, points in (("clip", sorted((b, s) for (b, t), s in table.items() if t == cfg["frames"])),
                             ("frame", sorted((t, s) for (b, t), s in table.items() if b == 1))):
            if len(points) < 2:
                continue
            (x0, y0), (x1, y1) = points[0], points[-1]
            slope = (y1 - y0) / (x1 - x0)
            deviation = (max(abs(y - (y0 + slope * (x - x0))) / y for x, y in points)
                         if all(y for _, y in points) else 0.0)
            entry[f"per_{axis}"] = slope
            entry[f"{axis}_points"] = points
            entry[f"{axis}_intercept"] = y0 - slope * x0
            entry[f"{axis}_nonlinearity"] = deviation
        slopes.append(entry)
    results["slopes"] = slopes
    goals = []
    for what, precision, name, quantity, bound in GOALS:
        row = results["methods"].get(precision, {}).get(name)
        value = row.get(quantity) if row else None
        goals.append({"goal": what.format(**cfg), "precision": precision, "method": name, "quantity": quantity,
                      "bound": bound, "value": value, "met": None if value is None else bool(value <= bound)})
    results["goals"] = goals


def to_markdown(results: dict[str, Any]) -> str:
    """The whole report; a function of the results alone (``--render`` reproduces it from the JSON)."""
    env, cfg = results["environment"], results["config"]
    v = env["versions"]
    lines = ["# Training memory and speed per step (`benchmarks/train_memory_speed.py`)", "",
             f"- command: `{env['command']}`", f"- date: {env['date']}",
             *[f"- resumed (the rows it lacked, measured the same way): `{r['command']}` at {r['date']}"
               for r in env.get("resumed", [])],
             f"- machine: {env['machine']}"
             + (f" (load average at start {env['loadavg_start'][0]:.1f})" if env.get("loadavg_start") else ""),
             f"- versions: torch {v['torch']}, open_clip {v['open_clip_torch']}, timm {v['timm']}, "
             f"deepspeed {v['deepspeed']} (the step is the engine's `train_step` on its plain-torch backend, "
             "`TorchBackend`; DeepSpeed itself is not in the loop), "
             f"Python {env['python']}",
             f"- backbone {cfg['arch_label']} (random weights), {cfg['frames']} frames x {cfg['size_used']} px, "
             f"batch {cfg['batch']}, {cfg['classes']} classes, AdamW (foreach/fused as `create_optimizer`); "
             f"{cfg['warmup']} warm-up + {cfg['steps']} timed steps, each paired with one frozen forward",
             f"- saved for backward: exact (distinct storages seen by `saved_tensors_hooks`, parameters excluded). "
             f"Peak memory: {results.get('peak_method', '')}"
             + (" minus the runtime's resident set after the imports, one fresh process per method, over all "
                "steps after the models are built" if env["device"] == "cpu" and cfg["isolate"] else "")
             + (" (in-process: approximate)" if not cfg["isolate"] else "")
             + "; it includes the frozen backbone's weights, trainable weights, gradients, AdamW state, activations"
             + (", allocator slack and the code pages the first kernels fault in (the floor row shows that constant "
                "plus the frozen weights)" if env["device"] == "cpu" else "")
             + " (full fine-tuning: without the frozen backbone it does not use).",
             "- time: per timed step, the training step and one frozen forward (the floor) back to back in the same "
             "process, alternating the order; 'vs floor' is the median of the per-pair ratios.", ""]
    if env["device"] == "cpu":
        lines += ["CPU times: bf16 on this CPU runs through oneDNN (AMX if present); they say nothing about a GPU.",
                  ""]
    for precision, rows in results["methods"].items():
        lines += [f"## {precision}", "",
                  "| method | trainable params | saved for backward | per clip | vs full FT (per clip) | peak memory "
                  "| vs full FT | step s | clips/s | vs floor (paired) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in rows.values():
            label = row["label"] + (f" (batch {row['batch']})" if row["batch"] != cfg["batch"] else "")
            lines.append(
                f"| {label} | {row['trainable'] / 1e6:.2f} M | {_mib(row['saved'])} MiB | "
                f"{_mib(row['saved_per_clip'])} MiB | {_ratio(row['saved_vs_ft'])} | {_mib(row['peak'])} MiB | "
                f"{_ratio(row['peak_vs_ft'])} | {row['step_s']:.2f} | "
                f"{row['clips_per_s']:.2f} | {row['time_vs_floor']:.2f}x |")
        lines += phase_table(rows)
        lines.append("")
        profiled = [row for row in rows.values() if row.get("profile")]
        for row in profiled:
            lines += [f"Largest self times, {row['label']}, {precision} (one profiled step, torch.profiler):", "",
                      "| op | calls | self s | share |", "|---|---|---|---|"]
            for e in row["profile"]:
                lines.append(f"| `{e['op']}` | {e['count']} | {e['self_s']:.3f} | {e['share'] * 100:.1f}% |")
            lines.append("")
    if results.get("slopes"):
        lines += ["## Scaling (exact saved bytes of one forward, batch 1 for frames, "
                  f"{cfg['frames']} frames for batch)", "",
                  "| precision | method | saved by frames (batch 1) | per frame | saved by batch | per clip | "
                  "batch-independent | max deviation from linear |", "|---|---|---|---|---|---|---|---|"]
        ft = {s["precision"]: s for s in results["slopes"] if s["method"] == "full_ft"}
        for s in results["slopes"]:
            frames_txt = ", ".join(f"{t}: {_mib(y)}" for t, y in s.get("frame_points", []))
            batch_txt = ", ".join(f"{b}: {_mib(y)}" for b, y in s.get("clip_points", []))
            ref = ft.get(s["precision"])
            rel_clip = (f" ({s['per_clip'] / ref['per_clip']:.2f}x FT)" if ref and "per_clip" in s and ref is not s
                        else "")
            rel_frame = (f" ({s['per_frame'] / ref['per_frame']:.2f}x FT)" if ref and "per_frame" in s and ref is not s
                         else "")
            dev = max(s.get("clip_nonlinearity", 0), s.get("frame_nonlinearity", 0))
            lines.append(f"| {s['precision']} | {s['method']} | {frames_txt} MiB | {_mib(s.get('per_frame', 0))} MiB"
                         f"{rel_frame} | {batch_txt} MiB | {_mib(s.get('per_clip', 0))} MiB{rel_clip} | "
                         f"{_mib(s.get('clip_intercept', 0))} MiB | {dev * 100:.3f}% |")
        lines.append("")
    if results.get("multiview"):
        lines += [f"## Multi-view test path (`forward_views`, one video, Side4Video D={cfg['side_dim']})", "",
                  "| precision | views | views per forward | peak memory | vs training step peak (same precision, "
                  f"batch {cfg['batch']}) | s per video | views/s |", "|---|---|---|---|---|---|---|"]
        for mv in results["multiview"]:
            train = results["methods"].get(mv["precision"], {}).get("side")
            rel = _ratio(mv["peak"] / train["peak"]) if train and train["peak"] > 0 else "–"
            lines.append(f"| {mv['precision']} | {mv['crops']} crops x {mv['clips']} clips = {mv['views']} | "
                         f"{mv['chunk']} | {_mib(mv['peak'])} MiB | {rel} | {mv['seconds']:.1f} | "
                         f"{mv['views_per_s']:.2f} |")
        lines.append("")
    if results.get("goals"):
        lines += ["## Goals (issue \"Performance\")", "",
                  "| goal | bound | measured | met | note |", "|---|---|---|---|---|"]
        for g in results["goals"]:
            value = "not measured" if g["value"] is None else (
                f"{g['value']:.1f} MiB" if g["quantity"].endswith("mib") else f"{g['value']:.3f}x")
            met = "–" if g["met"] is None else ("yes" if g["met"] else "**no**")
            bound = f"{g['bound']:.0f} MiB" if g["quantity"].endswith("mib") else f"{g['bound']:.2f}x"
            note = ""
            row = results["methods"].get(g["precision"], {}).get(g["method"])
            if row and g["quantity"] == "time_vs_floor":
                beyond = 1 + (row["phases"]["total"] - row["phases"].get("tap", 0)) / row["floor_s"]
                note = (f"pairs {', '.join(f'{r:.2f}' for r in row['ratios'])}; "
                        f"1 + (step − tap) / floor = {beyond:.2f}x")
            elif row and g["quantity"] == "saved_vs_ft":
                ft = results["methods"][g["precision"]].get("full_ft")
                if ft:
                    note = (f"{_mib(row['saved_per_clip'])} of {_mib(ft['saved'] / ft['batch'])} MiB per clip; "
                            f"bound = {_mib(g['bound'] * ft['saved'] / ft['batch'])} MiB")
            lines.append(f"| {g['goal']} | ≤ {bound} | {value} | {met} | {note} |")
        if env["device"] == "cpu":
            lines.append("")
            lines.append("Time ratios are CPU-only (2 cores here); on a GPU the frozen forward and the side network "
                         "have a different balance.")
        lines.append("")
    breakdowns = [(p, r) for p, rows in results["methods"].items() for r in rows.values()
                  if r.get("breakdown") and r["method"] in results["config"]["breakdown_methods"]]
    if breakdowns:
        lines += ["## Where the saved bytes go (largest groups of saved storages, summed over blocks)", "",
                  "Each storage counts once, whole; its shape is that of the first tensor seen on it (a tap's class "
                  "and patch tokens are views of one `[B·T, 1+N, W]` block output, so a `…x1x768` class-token row "
                  "keeps the whole tap alive). 'created by' is the tensor's `grad_fn` (or how it came to be), "
                  "'saved at' the innermost source lines outside torch.", ""]
        for precision, row in breakdowns:
            lines += [f"### {row['label']}, {precision}: {_mib(row['saved'])} MiB in {row['saved_storages']} storages",
                      "", "| MiB | count | module | created by | shape | dtype | saved at |",
                      "|---|---|---|---|---|---|---|"]
            for e in row["breakdown"]:
                lines.append(f"| {_mib(e['bytes'])} | {e['count']} | `{e['module']}` | {e['op']} | "
                             f"{'x'.join(map(str, e['shape']))} | {e['dtype']} | `{e['site']}` |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def phase_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Median phase times of every method's timed steps, measured inside the engine's step."""
    lines = ["", "Phases (median s), timed inside the engine's `train_step` (each ends with a device synchronisation): "
             "the frozen tap (the step's clip assembly), the model forward (the backend's, under autocast), "
             "backward, the optimizer step, and the rest of the step (plugins' own work such as SV-Mix's feature "
             "pass and mask branch, the losses, Python); the paired ratios; and 1 + (step − tap) / floor, the ratio "
             "with the tap's own timing noise taken out (tap = floor's work).", "",
             "| method | tap | forward | backward | optimizer | plugins, loss | step | floor | paired ratios "
             "| 1 + (step − tap) / floor |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows.values():
        p = row["phases"]
        # the baselines run no tap (their tower is the model) and the floor is the tap: no ratio beyond it
        tapped = row["method"] not in ("full_ft", "adapter", "floor") and row["floor_s"] > 0
        beyond = f"{1 + (p['total'] - p.get('tap', 0)) / row['floor_s']:.2f}x" if tapped else "–"
        other = f"{p['other']:.3f}" if "other" in p else "–"    # results written before it was measured
        lines.append(f"| {row['method']} | {p.get('tap', 0):.2f} | {p.get('forward', 0):.2f} | "
                     f"{p.get('backward', 0):.2f} | {p.get('optimizer', 0):.3f} | {other} | {p['total']:.2f} | "
                     f"{row['floor_s']:.2f} | {', '.join(f'{r:.2f}' for r in row['ratios'])} | {beyond} |")
    return lines
