"""``benchmarks/bench_retrieval_memory.py`` on the tiny backbone: positive, deterministic exact counts, the
orderings that must hold between the methods, and a backward that reaches what trains and nothing frozen."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_retrieval_memory.py"
TINY = str(ROOT / "side4video" / "assets" / "tiny_clip.json")
METHODS = ["side4video", "clip4clip_finetune", "clip4clip_frozen", "clip4clip_frozen_scale"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_retrieval_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # its dataclasses look their module up
    spec.loader.exec_module(module)
    module.quiet()
    return module


@pytest.fixture(scope="module")
def rows(bench):
    found = bench.measure_arch(TINY, frames=4, batch=2, methods=METHODS, rounds=2, side_dim=32, backward=True)
    return {row["method"]: row for row in found}


def test_counts_are_positive_and_the_same_every_round(rows):
    for name, row in rows.items():
        assert row["saved"] > 0 and row["trainable"] > 0, name
        assert len(row["rounds"]) == 2 and row["deterministic"], (name, row["rounds"])
        assert row["saved_per_clip"] * row["batch"] == row["saved"]


def test_counts_are_the_same_in_a_second_run(bench, rows):
    again = bench.measure_arch(TINY, frames=4, batch=2, methods=["clip4clip_finetune", "side4video"], rounds=1,
                               side_dim=32, record=False)
    for row in again:
        assert row["saved"] == rows[row["method"]]["saved"], row["method"]


def test_orderings(rows):
    finetune = rows["clip4clip_finetune"]
    assert rows["side4video"]["saved"] < finetune["saved"]
    assert rows["clip4clip_frozen"]["saved"] < rows["side4video"]["saved"]
    assert rows["clip4clip_frozen_scale"]["saved"] < rows["clip4clip_frozen"]["saved"] < finetune["saved"]
    assert finetune["ratio"] == 1.0 and 0 < rows["side4video"]["ratio"] < 1
    assert rows["side4video"]["trainable"] < finetune["trainable"]
    assert rows["clip4clip_frozen_scale"]["trainable"] == 1          # the logit scale alone


def test_backward_reaches_what_trains_and_nothing_frozen(rows):
    for name, row in rows.items():
        assert row["grad_reached"] == row["grad_trainable"] > 0, name
        assert row["grad_frozen"] == 0, name


def test_report_renders(bench, rows):
    env = {"date": "today", "machine": "here", "torch": "t", "open_clip": "o", "python": "p", "threads": "1"}
    text = bench.render(list(rows.values()), env, "python benchmarks/bench_retrieval_memory.py", 0.4)
    assert "| method | arch | frames | saved / clip |" in text and "## Goal" in text and "command:" in text
