"""Commands built on the recognition model (export, extract, ablation) given a retrieval config or checkpoint: one
error line that names the task and what to use instead, before anything heavy. The configs point
``network.pretrained`` at a file that does not exist: a command that went on to build the backbone would stop
with another error."""
from __future__ import annotations

import pytest
import torch

from side4video.config import load_config, to_plain_dict
from side4video.errors import ConfigError
from side4video.tasks import require_classification
from side4video.tools import ablation, export, extract_features
from tests.support import REPO

RETRIEVAL_CONFIG = REPO / "configs" / "toy" / "toy_retrieval_msrvtt.yaml"


def one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    return lines[0]


@pytest.fixture
def missing_weights(tmp_path) -> str:
    return f"network.pretrained={tmp_path / 'no_such_weights.safetensors'}"


def test_export_of_a_retrieval_checkpoint_names_the_task(tmp_path, capsys, missing_weights):
    # a checkpoint with its stored config, as a retrieval training writes it (no --config given)
    cfg = load_config(RETRIEVAL_CONFIG, [missing_weights])
    weights = tmp_path / "last.pt"
    torch.save({"config": to_plain_dict(cfg), "model": {}}, weights)
    status = export.main(["--weights", str(weights), "--format", "pt2", "--out", str(tmp_path / "out")])
    line = one_error_line(capsys.readouterr().err)
    assert status != 0 and not (tmp_path / "out").exists()
    assert line == ("error: side4video export supports the classification task only, got task 'retrieval'; a "
                    "retrieval checkpoint's video and caption embeddings are written by side4video extract-retrieval")


def test_extract_with_a_retrieval_config_points_to_extract_retrieval(tmp_path, capsys, missing_weights):
    status = extract_features.main(["--config", str(RETRIEVAL_CONFIG), "--list", str(tmp_path / "list.txt"),
                                    "--root", str(tmp_path), "--out", str(tmp_path / "out"),
                                    "--opts", missing_weights])
    line = one_error_line(capsys.readouterr().err)
    assert status != 0 and not (tmp_path / "out").exists()
    assert line == ("error: side4video extract supports the classification task only, got task 'retrieval'; for a "
                    "retrieval model's video and caption embeddings use side4video extract-retrieval")


def test_an_ablation_on_a_retrieval_base_names_the_task(tmp_path, capsys, missing_weights):
    spec = tmp_path / "ablation.yaml"
    spec.write_text(f"base: {RETRIEVAL_CONFIG}\n"
                    "variants:\n  - {name: a}\n  - {name: b, network: {side_dim: 16}}\n")
    status = ablation.main(["--config", str(spec), "--out", str(tmp_path / "out"), "--opts", missing_weights])
    line = one_error_line(capsys.readouterr().err)
    assert status != 0 and not (tmp_path / "out").exists()
    assert line == (f"error: {spec}: side4video ablation supports the classification task only, got task "
                    f"'retrieval'; train {RETRIEVAL_CONFIG} with train.py")


def test_a_classification_config_passes():
    cfg = load_config(REPO / "configs" / "toy" / "toy_side4video.yaml")
    assert require_classification(cfg, "x", "y").name == "classification"
    with pytest.raises(ConfigError, match="^x supports the classification task only, got task 'retrieval'; y$"):
        require_classification(load_config(RETRIEVAL_CONFIG), "x", "y")
