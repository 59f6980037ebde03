"""Baselines on extracted frozen features: linear probe, kNN and CLIP zero-shot.

    python -m side4video.tools.feature_baselines --features TRAIN_OUT --val_features VAL_OUT
        [--method linear|knn|zeroshot|all] [--k 20] [--epochs 100] [--config CFG.yaml [--opts ...]]
        [--side_results test_dir/results.json] [--json]

TRAIN_OUT and VAL_OUT are folders written by ``extract_features`` with the default output (final image
embeddings ``[views, T, E]``). A video's feature is the mean over its views and frames. The two folders must
hold different videos: a validation video among the training features (the same id under the same root, e.g.
one folder given twice) is an error.

* ``linear``: standardised features (train statistics), multinomial logistic regression trained full-batch
  with L-BFGS (``--epochs`` iterations) on the CPU; the weight decay comes from a small sweep on a held-out
  fifth of the training videos, then the probe is refitted on all of them.
* ``knn``: cosine similarity of L2-normalised video features; the k nearest training videos vote with
  weight ``exp(similarity / 0.07)`` (the DINO kNN protocol).
* ``zeroshot``: CLIP's text tower (rebuilt from ``--config`` with ``keep_text_tower=True``) embeds
  Text4Vis-style prompts for every class name (underscores read as spaces), averaged over a few templates;
  a video is scored by the cosine similarity of its L2-normalised mean embedding. Skipped, with the reason,
  when the backbone weights have no text tower.

``--side_results`` adds test.py's row for the trained side network, to show what it adds over the frozen
features.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer

from ..backbones import WeightMismatchError, backbone_identity, resolve_arch
from ..engine.builders import backbone_from_config
from ..engine.logging_utils import format_table
from ..errors import DataError, InputNotFoundError
from ..tasks.metrics import topk_accuracy
from .common import add_config_arguments, default_device, load_tool_config, run_command, stdout_to_stderr
from .extract_features import iter_features, read_index

METHODS = ("linear", "knn", "zeroshot")
KNN_TEMPERATURE = 0.07
WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
# Text4Vis-style prompts: the action phrase in a few sentence frames, embeddings averaged per class.
PROMPT_TEMPLATES = (
    "a video of a person {}.",
    "a video of {}.",
    "a person is {}.",
    "a clip of someone {}.",
    "an example of the action {}.",
    "{}",
)


@dataclass
class VideoFeatures:
    """One feature folder reduced to one vector per video."""
    features: torch.Tensor      # [N, E] float32, mean over views and frames
    labels: torch.Tensor        # [N] int64
    video_ids: list[str]
    class_names: list[str]
    index: dict[str, Any]       # the folder's index.json
    folder: str


def load_video_features(folder: str | Path) -> VideoFeatures:
    """Read an ``extract_features`` folder of final embeddings; one mean vector per readable video."""
    index = read_index(folder)
    if index["feature"] != "embedding":
        raise DataError(f"{folder} holds layer tokens (--layers {index['layers']}, --pool {index['pool']}); the "
                         "baselines need the final image embeddings: extract without --layers")
    if not index["videos"]:
        raise DataError(f"{folder}: no readable video was extracted")
    vectors, labels, ids = [], [], []
    for video, tensor in iter_features(folder, index):
        vectors.append(tensor.float().reshape(-1, tensor.shape[-1]).mean(dim=0))
        labels.append(video["label"])
        ids.append(video["video_id"])
    return VideoFeatures(torch.stack(vectors), torch.tensor(labels, dtype=torch.int64), ids, index["class_names"],
                         index, str(folder))


def video_locations(features: VideoFeatures) -> list[str]:
    """Where each video is: its id (the listed path) under the root it was extracted from, so that the same relative
    id under another root counts as another video; the bare id when the index records no root."""
    root = str(features.index.get("root") or "")
    return [os.path.normpath(os.path.join(root, video_id)) for video_id in features.video_ids]


def check_disjoint(train: VideoFeatures, val: VideoFeatures) -> None:
    """No evaluated video may be among the training videos: a probe or kNN fitted on the videos it is scored on
    measures memorisation, not the features (one folder given as both looked several times better than it is)."""
    trained = set(video_locations(train))
    shared = [video_id for video_id, where in zip(val.video_ids, video_locations(val)) if where in trained]
    if shared:
        same = Path(train.folder).resolve() == Path(val.folder).resolve()
        raise DataError(f"--features {train.folder} and --val_features {val.folder} "
                        + ("are the same folder: " if same else "overlap: ")
                        + f"{len(shared)} of {len(val.video_ids)} validation videos are also training videos "
                        f"(e.g. {shared[0]!r}); extract the training features from the training list")


def check_pair(train: VideoFeatures, val: VideoFeatures) -> None:
    """Both folders must come from the same backbone and label space, and hold different videos."""
    if train.index["backbone_sha256"] != val.index["backbone_sha256"] or train.index["arch"] != val.index["arch"]:
        raise DataError(f"{train.folder} and {val.folder} come from different backbones "
                         f"({train.index['arch']} {str(train.index['backbone_sha256'])[:12]} vs "
                         f"{val.index['arch']} {str(val.index['backbone_sha256'])[:12]})")
    if train.class_names != val.class_names:
        raise DataError(f"{train.folder} and {val.folder} have different class lists")
    if train.features.shape[1] != val.features.shape[1]:
        raise DataError(f"feature widths differ: {train.features.shape[1]} vs {val.features.shape[1]}")
    check_disjoint(train, val)


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    top = topk_accuracy(scores.detach().cpu().numpy(), labels.cpu().numpy(), (1, 5))
    return {"top1": top[1], "top5": top[5]}


# -- linear probe ------------------------------------------------------------------------------------------------
def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float,
                 iterations: int = 100) -> torch.nn.Linear:
    """Multinomial logistic regression, full batch, L-BFGS (deterministic: zero initialisation)."""
    probe = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=max(1, iterations), history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(x), y) + weight_decay * probe.weight.pow(2).sum() / 2
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def holdout_split(labels: torch.Tensor, fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded stratified split: about ``fraction`` of every class (at least one video of classes with two or more)
    is held out for choosing the weight decay."""
    generator = torch.Generator().manual_seed(seed)
    held, kept = [], []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n = int(round(len(members) * fraction)) if len(members) > 1 else 0
        n = max(n, 1) if len(members) > 1 else 0
        held.append(members[:n])
        kept.append(members[n:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def linear_probe(train: VideoFeatures, val: VideoFeatures, *, iterations: int = 100,
                 weight_decays: Sequence[float] = WEIGHT_DECAYS, seed: int = 0) -> dict[str, Any]:
    """Standardise → weight decay from a held-out sweep → refit on all training videos → val accuracy."""
    num_classes = len(train.class_names)
    mean, std = train.features.mean(dim=0), train.features.std(dim=0, unbiased=False).clamp_min(1e-6)
    x_train, x_val = (train.features - mean) / std, (val.features - mean) / std
    kept, held = holdout_split(train.labels, seed=seed)
    sweep = {}
    if len(held) and len(kept):
        for wd in weight_decays:
            probe = fit_logistic(x_train[kept], train.labels[kept], num_classes, wd, iterations)
            with torch.no_grad():
                sweep[wd] = accuracy(probe(x_train[held]), train.labels[held])["top1"]
        best = max(weight_decays, key=lambda wd: (sweep[wd], wd))  # ties: the stronger regulariser
    else:  # too few videos to hold any out
        best = weight_decays[len(weight_decays) // 2]
    probe = fit_logistic(x_train, train.labels, num_classes, best, iterations)
    with torch.no_grad():
        scores = probe(x_val)
    return {"method": "linear probe", **accuracy(scores, val.labels), "weight_decay": best,
            "sweep_holdout_top1": {str(k): v for k, v in sweep.items()}}


# -- kNN ---------------------------------------------------------------------------------------------------------
def knn_scores(train_x: torch.Tensor, train_y: torch.Tensor, query_x: torch.Tensor, num_classes: int, k: int = 20,
               temperature: float = KNN_TEMPERATURE, chunk: int = 1024) -> torch.Tensor:
    """``[Q, C]`` class votes: the k most cosine-similar training videos, each weighted ``exp(sim / T)``."""
    train_x = F.normalize(train_x.float(), dim=1)
    k = min(k, len(train_x))
    out = []
    for start in range(0, len(query_x), chunk):  # bounded memory for large sets
        sims = F.normalize(query_x[start:start + chunk].float(), dim=1) @ train_x.T
        top_sims, top_idx = sims.topk(k, dim=1)
        votes = torch.zeros(len(sims), num_classes)
        votes.scatter_add_(1, train_y[top_idx], (top_sims / temperature).exp())
        out.append(votes)
    return torch.cat(out)


def knn(train: VideoFeatures, val: VideoFeatures, *, k: int = 20) -> dict[str, Any]:
    scores = knn_scores(train.features, train.labels, val.features, len(train.class_names), k)
    return {"method": f"kNN (k={min(k, len(train.features))}, T={KNN_TEMPERATURE})", **accuracy(scores, val.labels)}


# -- zero-shot ---------------------------------------------------------------------------------------------------
def class_prompts(name: str, templates: Sequence[str] = PROMPT_TEMPLATES) -> list[str]:
    phrase = " ".join(name.replace("_", " ").split())
    return [template.format(phrase) for template in templates]


def tokenizer_for(arch: str):
    """open_clip's tokenizer for the backbone; the CLIP BPE vocabulary ships with open_clip (nothing downloaded)."""
    spec = resolve_arch(arch)
    text_cfg = spec.model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        raise DataError(f"{arch}: text towers with Hugging Face tokenizers are not supported")
    if spec.config_path is not None:  # a JSON config: open_clip does not know the name
        return SimpleTokenizer(context_length=int(text_cfg.get("context_length", 77)),
                               **text_cfg.get("tokenizer_kwargs", {}))
    return open_clip.get_tokenizer(spec.name)


@torch.no_grad()
def text_classifier(backbone, class_names: Sequence[str], tokenizer,
                    templates: Sequence[str] = PROMPT_TEMPLATES) -> torch.Tensor:
    """``[C, E]`` unit vectors: each class's prompt embeddings, normalised, averaged, normalised again."""
    device = next(backbone.parameters()).device
    weights = []
    for name in class_names:
        tokens = tokenizer(class_prompts(name, templates)).to(device)
        embeddings = backbone.encode_text(tokens, normalize=True).float()
        weights.append(F.normalize(embeddings.mean(dim=0), dim=0))
    return torch.stack(weights).cpu()


def create_text_backbone(cfg):
    """The backbone with its text tower, or ``(None, reason)`` when these weights have none."""
    try:
        backbone = backbone_from_config(cfg, default_device(), keep_text_tower=True)
    except WeightMismatchError as exc:
        if exc.missing and not exc.unexpected and not exc.mismatched and \
                not any(key.startswith("visual.") for key in exc.missing):
            return None, f"the backbone weights ({cfg.network.pretrained}) have no text tower"
        raise
    if not backbone.has_text_tower:
        return None, f"backbone {backbone.info.arch} has no text tower"
    return backbone, None


def zeroshot(cfg, val: VideoFeatures) -> dict[str, Any]:
    """CLIP zero-shot accuracy of the val features, or a row that says why it was skipped."""
    if all(name.isdigit() for name in val.class_names):
        return {"method": "CLIP zero-shot", "top1": None, "top5": None,
                "skipped": f"{val.folder} has no class names (extracted without data.label_list)"}
    backbone, reason = create_text_backbone(cfg)
    if backbone is None:
        return {"method": "CLIP zero-shot", "top1": None, "top5": None, "skipped": reason}
    identity = backbone_identity(backbone)
    if identity["sha256"] != val.index["backbone_sha256"] or identity["arch"] != val.index["arch"]:
        raise DataError(f"--config builds backbone {identity['arch']} ({identity['weights']}), but {val.folder} was "
                         f"extracted with {val.index['arch']} ({val.index['backbone']['weights']})")
    classifier = text_classifier(backbone, val.class_names, tokenizer_for(cfg.network.arch))
    scores = F.normalize(val.features, dim=1) @ classifier.T
    return {"method": f"CLIP zero-shot ({len(PROMPT_TEMPLATES)} prompts)", **accuracy(scores, val.labels)}


def side_network_row(path: str | Path, val: VideoFeatures | None = None) -> dict[str, Any]:
    """test.py's results.json as a table row; ``mismatch`` says when it was measured on other videos than ``val``
    (the ids in the scores.npz next to it, or at least the count, are compared)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"side network results not found: {path}")
    results = json.loads(path.read_text())
    for key in ("top1", "top5"):
        if key not in results:
            raise DataError(f"{path}: no '{key}' (expected test.py's results.json)")
    head = results.get("checkpoint", {}).get("head", "side4video")
    row = {"method": f"trained {head} ({results.get('protocol', '?')}, test.py)", "top1": results["top1"],
           "top5": results["top5"], "source": str(path), "mismatch": None}
    if val is not None:
        scores = path.with_name("scores.npz")
        if scores.is_file():
            with np.load(scores, allow_pickle=False) as data:
                tested = {str(v) for v in data["video_ids"]}
            extracted = set(val.video_ids)
            if tested != extracted:
                row["mismatch"] = (f"{path} was measured on {len(tested)} videos and the features cover "
                                   f"{len(extracted)}; {len(tested ^ extracted)} videos are in only one of them")
        elif results.get("num_videos") not in (None, len(val.video_ids)):
            row["mismatch"] = (f"{path} was measured on {results['num_videos']} videos, the features cover "
                               f"{len(val.video_ids)}")
    return row


def run_baselines(train_dir: str | Path, val_dir: str | Path, *, methods: Sequence[str] = METHODS, k: int = 20,
                  epochs: int = 100, cfg=None, side_results: str | Path | None = None) -> dict[str, Any]:
    """Every requested baseline's row (top-1/top-5 in percent), plus the side network's when given."""
    train, val = load_video_features(train_dir), load_video_features(val_dir)
    check_pair(train, val)
    rows = []
    if "linear" in methods:
        rows.append(linear_probe(train, val, iterations=epochs))
    if "knn" in methods:
        rows.append(knn(train, val, k=k))
    if "zeroshot" in methods:
        if cfg is None:
            rows.append({"method": "CLIP zero-shot", "top1": None, "top5": None,
                         "skipped": "needs --config to rebuild the backbone with its text tower"})
        else:
            rows.append(zeroshot(cfg, val))
    result: dict[str, Any] = {"train": str(train_dir), "val": str(val_dir), "arch": train.index["arch"],
                              "train_videos": len(train.labels), "val_videos": len(val.labels),
                              "protocol": val.index["protocol"], "rows": rows}
    if side_results:
        side = side_network_row(side_results, val)
        best = max((r["top1"] for r in rows if r.get("top1") is not None), default=None)
        comparable = best is not None and side["mismatch"] is None
        side["gain_over_best_frozen"] = side["top1"] - best if comparable else None
        result["side_network"] = side
    return result


def print_report(result: dict[str, Any]) -> None:
    print(f"{result['arch']} features: {result['train_videos']} train / {result['val_videos']} val videos, "
          f"val protocol {result['protocol']}")
    rows = [[r["method"], r["top1"], r["top5"]] for r in result["rows"]]
    side = result.get("side_network")
    if side:
        rows.append([side["method"], side["top1"], side["top5"]])
    print(format_table(["method", "top-1", "top-5"], rows))
    for r in result["rows"]:
        if r.get("skipped"):
            print(f"{r['method']} skipped: {r['skipped']}")
    if side and side.get("mismatch"):
        print(f"not compared: {side['mismatch']}")
    if side and side.get("gain_over_best_frozen") is not None:
        print(f"the side network adds {side['gain_over_best_frozen']:+.2f} top-1 over the best frozen-feature baseline")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="side4video baselines",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    parser.add_argument("--features", required=True, help="extract_features output of the training videos")
    parser.add_argument("--val_features", required=True, help="extract_features output of the evaluation videos")
    parser.add_argument("--method", choices=METHODS + ("all",), default="all", help="baseline(s) to run (default: all)")
    parser.add_argument("--k", type=int, default=20, help="neighbours of the kNN baseline (default: 20)")
    parser.add_argument("--epochs", type=int, default=100, help="L-BFGS iterations of the linear probe (default: 100)")
    add_config_arguments(parser, required=False)
    parser.add_argument("--side_results", default=None, help="test.py's results.json of a trained side network")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = parser.parse_args(argv)
    if args.k < 1 or args.epochs < 1:
        parser.error("--k and --epochs must be positive")
    methods = METHODS if args.method == "all" else (args.method,)

    def body() -> int:
        with stdout_to_stderr() if args.json else contextlib.nullcontext():
            cfg = load_tool_config(args.config, args.opts) if args.config and "zeroshot" in methods else None
            result = run_baselines(args.features, args.val_features, methods=methods, k=args.k, epochs=args.epochs,
                                   cfg=cfg, side_results=args.side_results)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print_report(result)
        return 0
    return run_command(body, code=2)


if __name__ == "__main__":
    sys.exit(main())
