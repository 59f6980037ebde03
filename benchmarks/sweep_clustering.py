"""Where full-video clustering stops helping on the sparse toy task: a sweep of the informative fraction.

    python benchmarks/sweep_clustering.py diagnose [--work DIR] [--variants NAME ...]   (no training, ~1 min)
    python benchmarks/sweep_clustering.py train [--work DIR] [--variants NAME ...] [--epochs 6] [--train_per_class 200]
                                                [--methods [uniform] [cluster]]

Each variant is a sparse toy dataset (``side4video.data.toy_sparse`` with ``--bursts`` / ``--burst_length``), generated
under ``--work`` (default ``/tmp/side4video_clustering_sweep``; skipped when already complete).

``diagnose`` needs no training: for every validation clip it runs the frozen tiny backbone over every frame (center
crop, the evaluation view) and reports, per clustering feature (layer, patch / class tokens, binarised as the
assembler does or raw L2 distances) what the 8 pseudo-frames of the cumulative (and slope) clusters hold, against 8
uniform TSN segment middles: the informative share of the pseudo-frames, how many of a clip's bursts dominate a
pseudo-frame (>= half of its frames from that burst: the disc at >= half contrast, at one place), and the share of
the change budget the features spend on frame transitions that touch an informative frame. Controls: 8 equal
contiguous segments (what the clusters become when every transition costs the same), and an oracle that cuts at
the burst edges.

``train`` trains ``configs/toy/toy_sparse_uniform.yaml`` and ``configs/toy/toy_sparse_cluster.yaml`` on every variant
with the same budget (one process at a time, ``OMP_NUM_THREADS=1``, ``data.workers=1``), reads the validation top-1
of every epoch from each run's ``metrics.jsonl`` and writes ``benchmarks/results/clustering_sweep.md`` (both tables).
Finished runs are read back, not trained again, so the sweep can be run piecewise (``--methods`` alone: report only).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "clustering_sweep.md"
CONFIGS = {"uniform": "configs/toy/toy_sparse_uniform.yaml", "cluster": "configs/toy/toy_sparse_cluster.yaml",
           "cluster_l2": "configs/toy/toy_sparse_cluster.yaml"}
# what a method changes in its config: cluster_l2 measures distances on the raw features instead of the bits
EXTRA_OPTS = {"cluster_l2": ["network.assembler={type: cluster, clusters: 8, method: cumulative, feature_layer: 0, "
                             "feature: patch, chunk: 1024, max_frames: 48, stride: 1, distance: l2}"]}
# name -> (bursts, burst_length), inclusive ranges (the generator's --bursts / --burst_length)
VARIANTS = {
    "b4-5_l3-5": ((4, 5), (3, 5)),   # the documented dataset's knobs (~45% informative)
    "b3_l3-5": ((3, 3), (3, 5)),     # fewer bursts (~30%)
    "b2_l3-5": ((2, 2), (3, 5)),     # the sparse toy (~20%, ~10 informative frames in 48)
    "b4-5_l2": ((4, 5), (2, 2)),     # as many bursts, shorter (~22%)
    "b4-5_l1": ((4, 5), (1, 1)),     # single informative frames (~11%)
}
_DIAGNOSIS_NOTE = (
    "Per clip, averaged: informative share of the 8 pseudo-frames; pseudo-frames at least half informative; bursts "
    "that make up at least half of some pseudo-frame (of the clip's bursts); bursts that do so for two or more "
    "pseudo-frames (a within-burst displacement); neighbouring pseudo-frames both at least half informative and the "
    "mean time between their informative frames; the share of the clip's total change (the clustering distance) on "
    "transitions that touch an informative frame, against their share of the transitions. `bits`: the assembler's "
    "binarised features and Hamming distances; `l2`: Euclidean distances of the same features (the assembler's "
    "`distance: l2`). Controls: 8 TSN segment middles, 8 equal segments averaged, bursts as clusters (oracle).")
THREADS = dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def generate(work: Path, name: str, train_per_class: int) -> Path:
    from side4video.backbones.tiny import TINY_CLIP_CONFIG, make_tiny_backbone
    from side4video.data.toy_sparse import generate_toy_sparse_dataset

    bursts, length = VARIANTS[name]
    out = work / f"{name}_n{train_per_class}"
    make_tiny_backbone(TINY_CLIP_CONFIG, out / "tiny_clip.safetensors")
    generate_toy_sparse_dataset(str(out), train_per_class=train_per_class, val_per_class=25, bursts=bursts,
                                burst_length=length, workers=1)
    return out


# -- diagnosis (no training) --------------------------------------------------------------------------------
def _load_val(data: Path):
    """Validation clips as normalised center crops ``[F, 3, 64, 64]``, their frame types and labels."""
    import torch
    from PIL import Image

    from side4video.data.toy_sparse import IMAGE_TMPL

    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    types = np.load(data / "frame_types" / "val.npz")
    clips = []
    for line in (data / "val_frames.txt").read_text().splitlines():
        path, count, label = line.split()
        frames = np.stack([np.asarray(Image.open(data / "frames" / path / IMAGE_TMPL.format(i)).convert("RGB"))
                           for i in range(1, int(count) + 1)])
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        left = (x.shape[-1] - x.shape[-2]) // 2
        x = (x[..., left:left + x.shape[-2]] - mean) / std
        clips.append((x, types[path.split("/")[1]].astype(np.int64), int(label)))
    return clips


def _distances(feats: np.ndarray, code: str) -> np.ndarray:
    from side4video.models.clustering import binarise, hamming_distances

    if code == "bits":
        return hamming_distances(binarise(feats))
    return np.linalg.norm(np.diff(feats, axis=0), axis=1)


def _clip_stats(types: np.ndarray, bounds: np.ndarray) -> dict:
    """What K pseudo-frames (``bounds [K, 2]``) hold of one clip's bursts.

    ``share``: mean informative share of the pseudo-frames; ``half``: pseudo-frames >= 50% informative (the disc at
    >= half contrast); ``kept``: bursts that make up >= half of some pseudo-frame; ``split``: bursts that make up >=
    half of two or more pseudo-frames (a displacement inside one burst, 1-4 frames: never wrapped); ``pairs``:
    neighbouring pseudo-frames both >= 50% informative and ``gap`` the mean time between their informative frames
    (the drift between them is ~2 px per frame; the frame is 64 px: beyond ~16 frames it may read backwards).
    """
    from side4video.data.toy_sparse import INFORMATIVE, informative_bursts

    bursts = informative_bursts(types)
    burst_of = np.full(len(types), -1)
    for i, (a, b) in enumerate(bursts):
        burst_of[a:b] = i
    shares, centres, hits = [], [], {}
    for start, end in bounds:
        member = burst_of[start:end]
        shares.append(float(np.mean(types[start:end] == INFORMATIVE)))
        times = np.flatnonzero(member >= 0) + start
        centres.append(float(times.mean()) if times.size else np.nan)
        for i in set(member[member >= 0].tolist()):
            if np.sum(member == i) * 2 >= end - start:
                hits[i] = hits.get(i, 0) + 1
    shares = np.asarray(shares)
    good = shares >= 0.5
    both = good[1:] & good[:-1]
    gaps = np.abs(np.diff(centres))[both]
    return dict(share=float(shares.mean()), half=int(good.sum()), kept=len(hits), bursts=len(bursts),
                split=sum(v >= 2 for v in hits.values()), pairs=int(both.sum()), gap=gaps.tolist())


def _uniform_bounds(frames: int, segments: int = 8) -> np.ndarray:
    tick = frames / segments
    picks = (tick / 2 + tick * np.arange(segments)).astype(np.int64)
    return np.stack([picks, picks + 1], axis=1)


def _budget_share(types: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """(share of the total change on transitions touching an informative frame, share of such transitions)."""
    from side4video.data.toy_sparse import INFORMATIVE

    touch = (types[1:] == INFORMATIVE) | (types[:-1] == INFORMATIVE)
    return float(d[touch].sum() / max(d.sum(), 1e-12)), float(touch.mean())


def diagnose(work: Path, names: list[str], train_per_class: int) -> str:
    import torch

    from side4video.backbones import create_backbone
    from side4video.models.clustering import cluster_frames, cumulative_clusters

    torch.set_num_threads(1)
    rows = []
    for name in names:
        data = generate(work, name, train_per_class)
        backbone = create_backbone(ROOT / "side4video/assets/tiny_clip.json", data / "tiny_clip.safetensors")
        clips = _load_val(data)
        taps = []
        with torch.no_grad():
            for x, _, _ in clips:
                out = backbone.tap(x, layers="all", embedding=False)
                taps.append((out.cls_tokens, out.patch_tokens))
        informative = float(np.mean(np.concatenate([t for _, t, _ in clips]) == 0))
        base = [_clip_stats(t, _uniform_bounds(len(t))) for _, t, _ in clips]
        oracle = [_clip_stats(t, _oracle_bounds(t)) for _, t, _ in clips]
        rows.append((name, informative, "uniform (8 TSN middles)", "-", base, None))
        rows.append((name, informative, "oracle (bursts as clusters)", "-", oracle, None))
        equal = [_clip_stats(t, cumulative_clusters(np.ones(len(t) - 1), 8)) for _, t, _ in clips]
        rows.append((name, informative, "8 equal segments, averaged", "-", equal, None))
        for layer in range(len(taps[0][0])):
            for feature in ("patch", "cls"):
                for code in ("bits", "l2"):
                    if code == "l2" and feature == "cls" and layer:
                        continue
                    for method in ("cumulative", "slope"):
                        if method == "slope" and (code != "bits" or feature != "patch" or layer):
                            continue
                        stats, budget = [], []
                        for (_, t, _), (cls, patch) in zip(clips, taps):
                            tok = (patch if feature == "patch" else cls)[layer].flatten(1).double().numpy()
                            d = _distances(tok, code)
                            stats.append(_clip_stats(t, cluster_frames(d, 8, method)))
                            budget.append(_budget_share(t, d))
                        rows.append((name, informative, f"{method} K=8", f"L{layer} {feature} {code}", stats,
                                     np.mean(budget, axis=0)))
    lines = ["| data | informative | frames | clustering feature | informative share of the 8 | "
             ">= 50% informative | bursts kept (of) | bursts split | informative neighbour pairs (mean gap) | "
             "change budget on informative transitions (their share) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, informative, method, feature, stats, budget in rows:
        mean = {key: np.mean([s[key] for s in stats]) for key in ("share", "half", "kept", "bursts", "split", "pairs")}
        gap = np.mean([g for s in stats for g in s["gap"]] or [np.nan])
        spent = "-" if budget is None else f"{budget[0]:.0%} ({budget[1]:.0%})"
        lines.append(f"| {name} | {informative:.0%} | {method} | {feature} | {mean['share']:.0%} | "
                     f"{mean['half']:.1f} | "
                     f"{mean['kept']:.1f} ({mean['bursts']:.1f}) | {mean['split']:.1f} | {mean['pairs']:.1f} "
                     f"({gap:.1f} frames) | {spent} |")
    return "\n".join(lines)


def _oracle_bounds(types: np.ndarray, clusters: int = 8) -> np.ndarray:
    """Every burst its own cluster (the rest in between), as far as K allows: the best K contiguous clusters."""
    from side4video.data.toy_sparse import informative_bursts
    from side4video.models.clustering import bounds_from_cuts, cumulative_clusters

    cuts = sorted({p for a, b in informative_bursts(types) for p in (a, b) if 0 < p < len(types)})
    if len(cuts) > clusters - 1:   # keep the burst starts and ends of as many bursts as fit
        cuts = cuts[:clusters - 1]
    if len(cuts) < clusters - 1:   # split the longest clusters to reach K
        while len(cuts) < clusters - 1:
            edges = [0] + cuts + [len(types)]
            gaps = np.diff(edges)
            i = int(np.argmax(gaps))
            if gaps[i] < 2:
                return cumulative_clusters(np.ones(len(types) - 1), clusters)
            cuts = sorted(cuts + [edges[i] + gaps[i] // 2])
    return bounds_from_cuts(cuts, len(types))


# -- training sweep ------------------------------------------------------------------------------------------
def train_one(data: Path, method: str, out: Path, epochs: int) -> dict:
    metrics = out / "metrics.jsonl"
    if not (out / "done.json").is_file():
        opts = ["data.workers=1", f"solver.epochs={epochs}", f"data.train_root={data}/frames",
                f"data.val_root={data}/frames", f"data.train_list={data}/train_frames.txt",
                f"data.val_list={data}/val_frames.txt", f"data.label_list={data}/labels.csv",
                f"network.pretrained={data}/tiny_clip.safetensors", *EXTRA_OPTS.get(method, [])]
        start = time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.with_suffix(".log"), "w") as log:
            subprocess.run([sys.executable, "-m", "side4video.tools.train", "--config", CONFIGS[method],
                            "--output", str(out), "--opts", *opts], cwd=ROOT, env={**os.environ, **THREADS},
                           stdout=log, stderr=subprocess.STDOUT, check=True)
        (out / "done.json").write_text(json.dumps(dict(seconds=time.perf_counter() - start)))
    top1 = [r["val_top1"] for r in map(json.loads, metrics.read_text().splitlines()) if "val_top1" in r]
    return dict(top1=top1, seconds=json.loads((out / "done.json").read_text())["seconds"])


def sweep(work: Path, names: list[str], train_per_class: int, epochs: int, methods: list[str]) -> str:
    """Train ``methods`` on every variant (finished runs are read back, not trained again) → a markdown table."""
    header = ["data (bursts, length)", "informative"]
    for method in CONFIGS:
        header += [f"{method} top-1 per epoch", f"{method} final"]
    header.append(f"minutes ({' / '.join(CONFIGS)})")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        data = generate(work, name, train_per_class)
        meta = json.loads((data / "toy_sparse_meta.json").read_text())
        informative = meta["stats"]["fractions"]["informative"]
        runs = {}
        for method in CONFIGS:
            out = work / "runs" / f"{name}_n{train_per_class}_e{epochs}_{method}"
            if method in methods or (out / "done.json").is_file():
                runs[method] = train_one(data, method, out, epochs)
        cells = [f"{name}", f"{informative:.0%}"]
        for method in CONFIGS:
            top1 = runs[method]["top1"] if method in runs else []
            cells += [", ".join(f"{v:.0f}" for v in top1) or "not run", f"{top1[-1]:.1f}" if top1 else "-"]
        cells.append(" / ".join(f"{runs[m]['seconds'] / 60:.1f}" if m in runs else "-" for m in CONFIGS))
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("diagnose", "train"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/side4video_clustering_sweep"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train_per_class", type=int, default=200, help="200: the documented dataset's size")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--methods", nargs="*", default=list(CONFIGS), choices=list(CONFIGS),
                        help="train these (finished runs of the others are reported too; none: report only)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write (train mode)")
    args = parser.parse_args(argv)
    os.environ.update(THREADS)
    if args.mode == "diagnose":
        print(diagnose(args.work, args.variants, args.train_per_class))
        return 0
    table = sweep(args.work, args.variants, args.train_per_class, args.epochs, args.methods)
    diagnosis = diagnose(args.work, args.variants, args.train_per_class)
    command = " ".join(["python benchmarks/sweep_clustering.py", *(argv if argv is not None else sys.argv[1:])])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        f"# Full-video clustering vs uniform sampling on sparser toys\n\n`{command}` (CPU, 1 thread per run)\n\n"
        f"## Training\n\n{args.train_per_class * 4} train / 100 val clips per dataset, {args.epochs} epochs, the "
        "toy_sparse_{uniform,cluster}.yaml configs otherwise (cluster_l2: the cluster config with "
        "`distance: l2`); validation top-1 (%, one centre crop: "
        "8 segment middles / the whole clip clustered) after every epoch; chance 25.\n\n"
        f"{table}\n\n## What the 8 frames hold (no training; validation clips, center crop)\n\n"
        f"{_DIAGNOSIS_NOTE}\n\n{diagnosis}\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
