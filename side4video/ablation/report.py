"""The ablation's report: the table (module(s), trainable parameters, val top-1, bytes saved for backward, step
time against the reference variant), the training curves and the measured saving of the shared backbone pass."""
from __future__ import annotations

import os
import platform
import shlex
import sys
from typing import Any, Sequence

import torch

from ..engine.logging_utils import format_table


def _mib(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2 ** 20:.2f} MiB" if value >= 2 ** 20 else f"{value / 2 ** 10:.1f} KiB"


def machine_description(device: torch.device) -> str:
    threads = torch.get_num_threads()
    cpu = f"{os.cpu_count()} CPU cores, {threads} torch thread{'s' if threads != 1 else ''}"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({cpu}); torch {torch.__version__}"
    return f"CPU only: {cpu} ({platform.processor() or platform.machine()}); torch {torch.__version__}"


def table_rows(results: dict) -> tuple[list[str], list[list[Any]]]:
    reference = results["reference"]
    crops, clips = results["budget"]["test_crops"], results["budget"]["test_clips"]
    frames = results["frames"]
    headers = ["variant", "module(s)", "trainable params", f"val top-1 ({frames}x{crops}x{clips})",
               "saved for backward / clip", f"step time vs {reference}", "step (ms)", "note"]
    rows = []
    for row in results["variants"]:
        top1 = row["top1"]
        rows.append([row["name"], row["modules"], f"{row['params']:,}",
                     "diverged" if row["diverged"] else (f"{top1:.1f}" if top1 is not None else "-"),
                     _mib(row["saved_bytes_per_clip"]),
                     f"{row['relative_step']:.2f}x" if row["relative_step"] is not None else "-",
                     f"{row['step_ms']:.0f}" if row["step_ms"] is not None else "-",
                     "; ".join(filter(None, [
                         f"plugins: {', '.join(row['plugins'])}" if row.get("plugins") else "",
                         f"+{row['plugin_params']:,} plugin params" if row.get("plugin_params") else "",
                         "own backbone pass" if row["own_pass"] else "", row["diverged"] or ""]))])
    return headers, rows


def _curves(results: dict) -> list[str]:
    """A second table: top-5 and the mean training loss of every epoch."""
    epochs = int(results["budget"]["epochs"])
    rows = []
    for row in results["variants"]:
        losses = {h["epoch"]: h.get("train_loss") for h in row["history"]}
        rows.append([row["name"], "-" if row["top5"] is None else f"{row['top5']:.1f}",
                     " ".join("-" if losses.get(e) is None else f"{losses[e]:.2f}" for e in range(epochs))])
    return [format_table(["variant", "val top-5", f"train loss, epochs 0-{epochs - 1}"], rows), ""]


def format_report(results: dict) -> str:
    headers, rows = table_rows(results)
    saving = results["saving"]
    budget = results["budget"]
    lines = [
        f"# Ablation: {results['config']}",
        "",
        f"- Command: `{results['command']}`",
        f"- Machine: {results['machine']}",
        f"- Date: {results['date']}",
        f"- Base config: `{results['base']}`; every variant: {budget['epochs']} epoch(s) x "
        f"{results['batches_per_epoch']} batches of {results['clips_per_batch']} clips, the same batches in the same "
        f"order with the same augmentation, the same solver ({results['solver']}); models seeded with seed "
        f"{results['seed']}, each variant its own optimizer, schedule and RNG stream.",
        f"- Test: {results['frames']} frames x {budget['test_crops']} crops x {budget['test_clips']} clips of the val "
        f"list ({results['test_videos']} videos), softmax per view then mean. Saved for backward: distinct storages "
        "autograd keeps in one training forward (parameters not counted) / clips in the batch. Step: forward + "
        f"backward + optimizer step, median over {results['timed_batches']} batches (first "
        f"{results['warmup_batches']} left out), in this run.",
        "",
        format_table(headers, rows),
        "",
        *_curves(results),
        "## Shared backbone pass vs separate runs",
        "",
        f"Per batch (medians): data {saving['load_ms']:.0f} ms, one backbone pass {saving['backbone_ms']:.0f} ms "
        f"(layers {saving['layers']}{', + embedding' if saving['embedding'] else ''}), variant steps "
        f"{saving['steps_ms']:.0f} ms in all ({results['num_variants']} variants, "
        f"{saving['sharing']} on the shared pass).",
        "",
        f"- shared: data + 1 backbone pass + steps = **{saving['shared_ms']:.0f} ms** per batch",
        f"- separate runs: {results['num_variants']} x data + {saving['sharing']} x backbone pass + steps = "
        f"**{saving['separate_ms']:.0f} ms** per batch",
        f"- shared / separate = **{saving['ratio']:.2f}** ({100 * (1 - saving['ratio']):.0f}% saved)",
        f"- whole training loop of this run: {saving['train_wall_s']:.0f} s measured; separate runs of the same "
        f"budget, estimated from the per-batch times: {saving['separate_wall_estimate_s']:.0f} s",
    ]
    check = results.get("check")
    if check:
        lines += [
            "",
            f"Real measurement ({', '.join(check['variants'])}: fresh models, {check['epochs']} epoch(s) = "
            f"{check['batches']} batches, training loops only):",
            "",
            f"- side by side on one backbone pass: **{check['shared_s']:.1f} s**",
            f"- separately, each with its own loader and backbone pass: **{check['separate_s']:.1f} s** ("
            + ", ".join(f"{n} {s:.1f} s" for n, s in check["separate_each_s"].items()) + ")",
            f"- shared / separate = **{check['ratio']:.2f}** measured (predicted from the per-batch times: "
            f"{check['predicted_ratio']:.2f})",
            f"- weights after the separate runs identical to those trained side by side: "
            f"{'yes' if check['identical'] else 'NO: ' + ', '.join(check['differs'])}",
        ]
    passes = results["backbone_passes"]
    lines += ["", f"Backbone passes: {passes['train']} for {passes['train_batches']} training batches, "
                  f"{passes['eval']} at test time ({passes['eval_chunks_note']})."]
    return "\n".join(lines) + "\n"


def command_line(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    return prefix + "side4video ablation " + " ".join(shlex.quote(a) for a in args)


__all__ = ["machine_description", "table_rows", "format_report", "command_line"]
