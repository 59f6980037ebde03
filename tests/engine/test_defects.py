"""Defects found in review and acceptance testing: each test fails without its fix."""
from __future__ import annotations

import errno
import io
import json
import math
import pickle
import sys

import pytest
import torch

from side4video.errors import CheckpointError, ConfigError, DataError, Side4VideoError
from side4video.tools.common import run_command


# -- one error hierarchy, one line per input error, tracebacks for bugs ------------------------------------------
def test_input_errors_are_one_line_and_bugs_keep_their_traceback(capsys):
    def config_error():
        raise ConfigError("cfg.yaml: 'solver.lr' must be a number > 0, got 'abc'")
    assert run_command(config_error) == 1
    err = capsys.readouterr().err
    assert err == "error: cfg.yaml: 'solver.lr' must be a number > 0, got 'abc'\n"

    def bug():
        raise ValueError("an internal mistake")
    with pytest.raises(ValueError, match="an internal mistake"):   # not swallowed into one line
        run_command(bug)

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/checkpoints/last.pt")
    assert run_command(full_disk) == 1
    assert capsys.readouterr().err == "error: /data/run/checkpoints/last.pt: No space left on device\n"

    def interrupted():
        raise KeyboardInterrupt
    assert run_command(interrupted, interrupted=lambda: "interrupted at epoch 3; resume with: ...") == 130
    assert capsys.readouterr().err.strip() == "interrupted at epoch 3; resume with: ..."


def test_every_user_error_class_is_a_side4video_error():
    from side4video.backbones import WeightMismatchError
    from side4video.data import TooManyUnreadableInputs
    from side4video.engine.trainer import TrainingDiverged
    from side4video.files import OutputInUse
    for cls in (WeightMismatchError, TooManyUnreadableInputs, TrainingDiverged, OutputInUse, ConfigError, DataError,
                CheckpointError):
        assert issubclass(cls, Side4VideoError), cls


def test_a_weight_file_of_another_architecture_is_one_line_from_test_py(tmp_path, capsys, quiet_random_weights,
                                                                        toy_data):
    from side4video.backbones.tiny import make_tiny_backbone
    from side4video.tools.test import main as test_main
    from tests.support import TINY_CLIP_JSON, TINY_EVA_JSON, write_toy_config
    weights = make_tiny_backbone(TINY_EVA_JSON, tmp_path / "eva.safetensors")   # EVA weights, CLIP config
    checkpoint = tmp_path / "ckpt.pt"
    torch.save({"fc.weight": torch.zeros(8, 64)}, checkpoint)
    # the toy data of the test session, not ./toy_data (which only the demo writes)
    config = write_toy_config(tmp_path / "cfg.yaml", toy_data)
    code = test_main(["--config", str(config), "--weights", str(checkpoint),
                      "--opts", f"network.arch={TINY_CLIP_JSON}", f"network.pretrained={weights}"])
    err = capsys.readouterr().err
    assert code == 1 and "do not match the architecture" in err and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: weights in ")


def test_input_size_that_the_backbone_cannot_take_is_a_config_error(quiet_random_weights):
    from side4video.config import load_config
    from side4video.engine.builders import backbone_from_config
    from tests.support import TINY_CLIP_JSON
    for size in (32, 48):
        cfg = load_config(None, ["data.num_classes=8", f"network.arch={TINY_CLIP_JSON}", "network.pretrained=false",
                                 f"data.input_size={size}"])
        with pytest.raises(ConfigError, match=f"data.input_size is {size}, but backbone tiny_clip takes 64 x 64 px"):
            backbone_from_config(cfg)


def test_a_missing_toy_backbone_says_how_to_make_it():
    from side4video.config import load_config
    from side4video.engine.builders import backbone_from_config
    cfg = load_config("configs/toy/toy_side4video.yaml", ["network.pretrained=toy_data/nothing_here.safetensors"])
    with pytest.raises(FileNotFoundError, match=r"python -m side4video.data.toy --out toy_data"):
        backbone_from_config(cfg)


# -- checkpoints --------------------------------------------------------------------------------------------------
def test_checkpoint_read_errors_give_the_reason_and_never_advise_unsafe_loading(tmp_path):
    from side4video.engine.checkpoint import load_checkpoint
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="the file is empty"):
        load_checkpoint(empty)
    truncated = tmp_path / "truncated.pt"
    torch.save({"model": {"w": torch.zeros(100)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        load_checkpoint(truncated)
    hostile = tmp_path / "hostile.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))
    with open(hostile, "wb") as handle:
        pickle.dump({"model": Payload()}, handle)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(hostile)
    assert "cannot be loaded safely" in str(caught.value) and "weights_only=False" not in str(caught.value)


def _tiny_side_model(num_classes: int):
    from side4video.backbones.frozen import BackboneInfo
    from side4video.models import create_model
    info = BackboneInfo(arch="tiny", family="clip", width=48, num_layers=2, patch_size=8, image_size=32,
                        embed_dim=24, weights=None, weights_format=None, quick_gelu=False)
    return create_model("side4video", info, num_classes, side_dim=32)


def test_a_checkpoint_for_another_class_count_is_one_line_naming_both(tmp_path):
    from side4video.engine.builders import check_fits
    trained = _tiny_side_model(174)
    state = trained.state_dict()
    with pytest.raises(CheckpointError, match="was trained for 174 classes, but data.num_classes is 8"):
        check_fits(_tiny_side_model(8), state, {"model": state}, "best.pt")


def test_old_checkpoint_names_load_into_the_new_module_layout():
    from side4video.engine.checkpoint import trainable_state_dict
    model = _tiny_side_model(5)
    old = {k.replace(".pre_attn.0.norm.", ".temporal_norm.").replace(".pre_attn.0.", ".temporal."): v
           for k, v in model.state_dict().items()}
    assert any(".temporal_norm." in k for k in old)
    model.load_state_dict(trainable_state_dict({"model": old}))


def test_results_json_is_strict_json():
    from side4video.engine.logging_utils import dump_json
    text = dump_json({"top1": float("nan"), "rows": [1.0, float("inf")]})
    assert json.loads(text) == {"top1": None, "rows": [1.0, None]}
    assert math.isnan(float("nan"))


def test_stale_checkpoint_temporaries_are_removed(tmp_path):
    from side4video.files import remove_stale_temporaries
    dead = tmp_path / ".last.pt.tmp999999"      # no such process
    dead.write_bytes(b"half")
    mine = tmp_path / f".best.pt.tmp{__import__('os').getpid()}"
    mine.write_bytes(b"being written")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert not dead.exists() and mine.exists()


# -- data loss ----------------------------------------------------------------------------------------------------
def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    from side4video.files import OutputInUse, OutputLock
    first = OutputLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(OutputInUse, match="is in use by another training run"):
            OutputLock(tmp_path).acquire()
    finally:
        first.release()
    again = OutputLock(tmp_path)
    again.acquire()
    again.release()


def test_the_demo_never_clears_a_folder_it_did_not_write(tmp_path):
    from side4video.tools.demo import MARKER, prepare_output
    precious = tmp_path / "checkout"
    precious.mkdir()
    (precious / "README.md").write_text("keep me")
    with pytest.raises(SystemExit, match="not empty and was not written by the demo"):
        prepare_output(precious)
    assert (precious / "README.md").read_text() == "keep me"
    demo = tmp_path / "demo"
    prepare_output(demo)
    (demo / "old_result.json").write_text("{}")
    prepare_output(demo)                         # its own folder: cleared and marked again
    assert sorted(p.name for p in demo.iterdir()) == [MARKER]


def test_test_results_are_named_by_everything_that_changes_them():
    from side4video.engine.testing import default_test_dir
    base = default_test_dir("run/checkpoints/best.pt", "8x3x2")
    assert str(base) == "run/test_best_8x3x2"
    others = {default_test_dir("run/checkpoints/last.pt", "8x3x2"), default_test_dir("run/checkpoints/best.pt", "8x3x2",
              dense=True), default_test_dir("run/checkpoints/best.pt", "8x3x2", average="logit"),
              default_test_dir("run/checkpoints/best.pt", "8x1x1")}
    assert base not in others and len(others) == 4


# -- console ----------------------------------------------------------------------------------------------------
def test_progress_bars_write_little_into_log_files(monkeypatch):
    from side4video.engine import logging_utils
    sink = io.StringIO()
    monkeypatch.setattr(sys, "stderr", sink)          # not a terminal, like a log file or CI output
    with logging_utils.progress_bar(interval=60.0, total=2000, desc="epoch 0") as bar:
        for step in range(2000):
            bar.set_postfix({"loss": f"{1 / (step + 1):.4f}"}, refresh=False)
            bar.update(1)
    assert len(sink.getvalue()) < 1000, f"{len(sink.getvalue())} bytes of progress for one epoch"


@pytest.mark.parametrize("flag", ["--test_clips", "--batch_size", "--max_views"])
@pytest.mark.parametrize("bad", ["0", "-2", "x"])
def test_command_line_counts_must_be_positive(flag, bad, capsys):
    """test.py refuses a count < 1 before anything runs (it used to become 1, the default, or fail later)."""
    from side4video.tools.test import main as test_main
    with pytest.raises(SystemExit) as exit_info:
        test_main(["--weights", "missing.pt", flag, bad])
    assert exit_info.value.code == 2
    assert f"argument {flag}: expected a positive integer, got " in capsys.readouterr().err


def test_a_test_set_where_no_video_can_be_read_is_an_error_not_nan(tmp_path, capsys, quiet_random_weights, toy_data):
    """Every listed frame folder is missing: test.py exits 1 with one line naming the list and the first reasons
    (it used to print top-1 nan and write NaN into results.json)."""
    from side4video.config import load_config
    from side4video.engine.builders import backbone_from_config, model_from_config
    from side4video.tools.test import main as test_main
    from tests.support import write_toy_config
    listed = tmp_path / "gone.txt"
    listed.write_text("".join(f"val/gone{i} 24 {i}\n" for i in range(3)))
    config = write_toy_config(tmp_path / "cfg.yaml", toy_data, **{"data.val_list": str(listed)})
    cfg = load_config(config)
    weights = tmp_path / "weights.pt"
    torch.save(model_from_config(cfg, backbone_from_config(cfg)).state_dict(), weights)
    code = test_main(["--config", str(config), "--weights", str(weights), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: {listed}: none of the 3 videos could be read (val/gone0: frame folder not found")
    assert not (tmp_path / "out" / "results.json").exists()
