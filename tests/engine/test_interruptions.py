"""Runs that stop and go on without losing or mixing work, end to end through train.py: signals (SIGINT, SIGTERM,
two processes), a full disk, a resume that changes what a step means or the global batch, and BatchNorm statistics
that are the same model on every process."""
from __future__ import annotations

import json
import math
import signal

import pytest

from side4video.config import load_config
from side4video.engine.checkpoint import load_checkpoint
from side4video.engine.distributed import free_port
from side4video.engine.logging_utils import read_jsonl
from side4video.engine.optim import lr_factor_fn
from tests.support import run_script, write_toy_config

pytestmark = pytest.mark.slow


def _losses(run_dir) -> dict[int, float]:
    return {row["global_step"]: row["loss"] for row in read_jsonl(run_dir / "steps.jsonl")}


def _train(config, out_dir, *extra, fault: tuple[str, int] | None = None, rank: int | None = None,
           processes: int = 1):
    args = ["--config", str(config), "--output", str(out_dir), *extra]
    prefix = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(free_port())] \
        if processes > 1 else []
    if fault is None:
        return run_script([*prefix, "train.py", *args])
    flag, value = fault
    fault_args = ["train", flag, str(value), *(["--rank", str(rank)] if rank is not None else []), "--", *args]
    return run_script([*prefix, "-m", "tests.fault_injection", *fault_args])


@pytest.fixture(scope="module")
def uninterrupted(toy_data, tmp_path_factory):
    """Two epochs of 4 steps, no periodic checkpoint: what every interrupted run must reproduce."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    config = write_toy_config(folder / "cfg.yaml", toy_data, **{"data.flip": True, "network.drop_path": 0.1})
    result = _train(config, folder / "run")
    assert result.returncode == 0, result.stderr
    return config, folder / "run"


@pytest.mark.parametrize("flag,status,name", [("--interrupt-at-step", 130, "SIGINT"),
                                              ("--terminate-at-step", 143, "SIGTERM")])
def test_a_signal_saves_the_position_and_the_resumed_run_continues_exactly(uninterrupted, tmp_path, flag, status,
                                                                           name):
    config, full = uninterrupted
    # the signal arrives during step 3 (before any periodic checkpoint): that step finishes, then the position is saved
    stopped = _train(config, tmp_path / "run", fault=(flag, 2))
    assert stopped.returncode == status, stopped.stderr
    assert "Traceback" not in stopped.stderr
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith(f"stopped by {name} at epoch 0, step 3") and "--resume auto" in line
    assert str(tmp_path / "run" / "checkpoints" / "last.pt") in line
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 3, 3)
    resumed = _train(config, tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr
    assert _losses(tmp_path / "run") == _losses(full)


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step_and_resumes_exactly(toy_data, tmp_path):
    config = write_toy_config(tmp_path / "cfg.yaml", toy_data, **{"data.batch_size": 4, "solver.optim": "sgd"})
    full = _train(config, tmp_path / "full", processes=2)
    assert full.returncode == 0, full.stderr[-2000:]
    stopped = _train(config, tmp_path / "run", fault=("--terminate-at-step", 5), rank=0, processes=2)
    assert stopped.returncode != 0
    assert "stopped by SIGTERM at epoch 1, step 2" in stopped.stderr
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (state["epoch"], state["global_step"], state["world_size"]) == (1, 6, 2)
    resumed = _train(config, tmp_path / "run", processes=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _losses(tmp_path / "run") == _losses(tmp_path / "full")


def test_a_full_disk_is_one_line_and_the_next_start_resumes_from_the_last_good_checkpoint(uninterrupted, toy_data,
                                                                                         tmp_path):
    _, full = uninterrupted
    config = write_toy_config(tmp_path / "cfg.yaml", toy_data, **{"data.flip": True, "network.drop_path": 0.1,
                                                                 "logging.save_freq_steps": 2})
    # checkpoint writes: step 2 (good), the end of epoch 0 (the disk is full from there on)
    failed = _train(config, tmp_path / "run", fault=("--disk-full-at-save", 2))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: cannot write") and "no space left on the disk of" in error and "free" in error
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["global_step"] == 2
    resumed = _train(config, tmp_path / "run")
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout
    assert _losses(tmp_path / "run") == _losses(full)


def test_a_resume_that_changes_the_model_is_refused_unless_allowed_and_then_recorded(toy_data, tmp_path):
    config = write_toy_config(tmp_path / "cfg.yaml", toy_data, **{"solver.epochs": 1})
    assert _train(config, tmp_path / "run").returncode == 0
    first = (tmp_path / "run" / "config.yaml").read_text()
    more = ["--opts", "solver.epochs=2", "data.num_segments=4", "network.drop_path=0.1"]
    refused = _train(config, tmp_path / "run", *more)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert "data.num_segments 8 -> 4" in line and "network.drop_path 0.0 -> 0.1" in line and "--allow_changes" in line
    allowed = _train(config, tmp_path / "run", *more, "--allow_changes")
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "run" / "config.yaml").read_text() == first, "the first segment's config is kept"
    assert load_config(tmp_path / "run" / "config.resumed-1.yaml").data.num_segments == 4
    (record,) = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["resumes"]
    assert record["allowed_changes"] and record["changed"]["data.num_segments"] == [8, 4]


@pytest.mark.parametrize("change", ["batch size", "processes"])
def test_a_resume_with_another_global_batch_continues_the_schedule_in_samples(toy_data, tmp_path, change):
    """Killed after step 3 of epoch 0 (checkpoint at step 2 = 16 of 32 videos), resumed with twice the global batch:
    the run continues at video 16 with 2 steps per epoch, and the learning rate follows the schedule of those
    steps (it ran at lr 0 before)."""
    config = write_toy_config(tmp_path / "cfg.yaml", toy_data, **{"logging.save_freq_steps": 2,
                                                                 "solver.lr_warmup_step": 0})
    assert _train(config, tmp_path / "run", fault=("--kill-at-step", 3)).returncode != 0
    if change == "batch size":
        resumed = _train(config, tmp_path / "run", "--opts", "data.batch_size=16")
    else:
        resumed = _train(config, tmp_path / "run", processes=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming with a changed schedule" in resumed.stdout + resumed.stderr
    assert "sample 16 of 32" in resumed.stdout + resumed.stderr
    cfg = load_config(config)
    factor = lr_factor_fn(cfg.solver, steps_per_epoch=2)
    after = [row for row in read_jsonl(tmp_path / "run" / "steps.jsonl") if row["global_step"] > 2]
    assert [row["lr"] for row in after] == pytest.approx([cfg.solver.lr * factor(s) for s in (1, 2, 3)])
    assert all(row["lr"] > 0 for row in after) and len(after) == 3


def test_two_processes_validate_and_save_one_model(toy_data, tmp_path):
    """Without sync_bn each process updates BatchNorm statistics with its own clips; they are averaged before
    validation and saving, so the logged validation is what test.py measures on the checkpoint."""
    config = write_toy_config(tmp_path / "cfg.yaml", toy_data, **{"data.batch_size": 4, "solver.epochs": 1})
    trained = _train(config, tmp_path / "run", processes=2)
    assert trained.returncode == 0, trained.stderr[-2000:]
    logged = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    tested = run_script(["test.py", "--config", str(config), "--weights", str(tmp_path / "run/checkpoints/last.pt"),
                         "--output", str(tmp_path / "test")])
    assert tested.returncode == 0, tested.stderr
    results = json.loads((tmp_path / "test" / "results.json").read_text())
    assert (results["top1"], results["top5"]) == (logged["val_top1"], logged["val_top5"])
    assert not math.isnan(results["top1"])


def test_signal_numbers_map_to_the_shell_exit_statuses():
    from side4video.engine.signals import EXIT_STATUS
    assert EXIT_STATUS == {signal.SIGINT: 130, signal.SIGTERM: 143}
