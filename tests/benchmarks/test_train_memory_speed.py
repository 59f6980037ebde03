"""``benchmarks/train_memory_speed.py --smoke``: it completes, reports sane numbers, and the exact relations between
the methods' saved-for-backward bytes hold. No timing asserts."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "train_memory_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_memory_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_memory_speed")
    results = bench.main(["--smoke", "--json", str(out / "results.json"), "--output", str(out / "results.md")])
    return results, out


def test_smoke_completes_with_every_method(bench, smoke):
    results, out = smoke
    rows = results["methods"]["fp32"]
    assert list(rows) == [m for m in bench.METHODS if m not in bench.OPT_IN]
    assert json.loads((out / "results.json").read_text())["methods"]["fp32"].keys() == rows.keys()
    text = (out / "results.md").read_text()
    for needle in ("| Side4Video D=64 |", "full fine-tuning", "floor: frozen forward", "## Scaling",
                   "## Multi-view test path", "## Goals", "torch ", "open_clip ", "timm ", "deepspeed ", "command:"):
        assert needle in text


def test_numbers_are_sane(smoke):
    results, _ = smoke
    for name, row in results["methods"]["fp32"].items():
        for key in ("saved", "peak_abs", "trainable", "param_grad_adam"):
            assert row[key] >= 0, (name, key, row[key])
        for key in ("step_s", "floor_s", "time_vs_floor"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key, row[key])
        assert row["param_grad_adam"] == 16 * row["trainable"]
        assert row["saved_per_clip"] * row["batch"] == row["saved"]
        assert set(row["phases"]) >= {"tap", "total"}
    mv = results["multiview"][0]
    assert mv["views"] == 3 * 2 and mv["peak_abs"] > 0 and mv["seconds"] > 0


def test_exact_relations_of_saved_bytes(smoke):
    results, _ = smoke
    saved = {name: row["saved"] for name, row in results["methods"]["fp32"].items()}
    assert saved["floor"] == 0
    assert results["methods"]["fp32"]["floor"]["trainable"] == 0
    for base in ("side", "light"):
        assert 0 < saved["probe"] < saved[base]
        assert saved[f"{base}-ckpt"] < saved[base]                              # checkpointing keeps less
        assert saved[base] < saved[f"{base}-norecompute"]                       # recompute keeps less
        assert saved[f"{base}-ckpt"] <= saved[f"{base}-ckpt-norecompute"]      # nothing inside a checkpoint is kept
        assert saved[f"{base}-ckpt-norecompute"] < saved[f"{base}-norecompute"]
    assert saved["light"] < saved["side"]
    assert saved["adapter"] > saved["probe"] and saved["full_ft"] > saved["probe"]


def test_svmix_row_counts_its_mixblock_and_its_pass_through_the_backbone(smoke):
    """SV-Mix trains the side network plus the MixBlock (LayerNorm(W) + Linear(W+1→W) + Linear(W+1→1)), and its
    mask branch backpropagates through the frozen backbone to the pixels, so it keeps far more than the plain side
    network: at least the backbone's own activations, which the adapter baseline (also backprop through the
    backbone, with tiny adapters) keeps too."""
    results, _ = smoke
    rows = results["methods"]["fp32"]
    width = json.loads((ROOT / "side4video" / "assets" / "tiny_clip.json").read_text())["vision_cfg"]["width"]
    mixblock = 2 * width + (width + 1) * width + width + (width + 1) + 1
    assert rows["side-svmix"]["trainable"] == rows["side"]["trainable"] + mixblock
    adapter_extra = rows["adapter"]["saved"] - rows["probe"]["saved"]
    assert rows["side-svmix"]["saved"] > rows["side"]["saved"] + 0.5 * adapter_extra


def test_scaling_is_exactly_linear_and_matches_the_step(smoke):
    results, _ = smoke
    cfg = results["config"]
    main = results["methods"]["fp32"]
    for row in results["scaling"]:
        if row["batch"] == cfg["batch"] and row["frames"] == cfg["frames"]:
            assert row["saved"] == main[row["method"]]["saved"]                 # same graph, same count
    slopes = {s["method"]: s for s in results["slopes"]}
    assert set(slopes) == {"side", "side-ckpt", "light", "light-ckpt", "full_ft"}
    for s in slopes.values():
        assert s["per_clip"] > 0 and s["per_frame"] > 0
        assert s["clip_nonlinearity"] < 1e-3 and s["frame_nonlinearity"] < 1e-3
    assert slopes["side-ckpt"]["per_clip"] < slopes["side"]["per_clip"]


def test_goals_are_reported(smoke):
    results, _ = smoke
    goals = results["goals"]
    assert len(goals) == 7
    measured = [g for g in goals if g["precision"] == "fp32"]
    assert all(g["value"] is not None and g["met"] in (True, False) for g in measured)
    assert all(g["value"] is None for g in goals if g["precision"] == "bf16")   # the smoke runs fp32 only


def test_render_reproduces_the_markdown(bench, smoke, tmp_path):
    _, out = smoke
    bench.main(["--render", str(out / "results.json"), "--output", str(tmp_path / "again.md")])
    assert (tmp_path / "again.md").read_text() == (out / "results.md").read_text()
