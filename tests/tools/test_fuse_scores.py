"""fuse_scores: weighted means by hand, alignment by video id, and the errors that protect a fusion."""
import json

import numpy as np
import pytest

from side4video.engine.testing import save_scores
from side4video.tasks.views import ScoreSet
from side4video.tools.fuse_scores import fuse_files, main, read_scores

CLASSES = ["a", "b", "c", "d"]
IDS = ["v/1", "v/2", "v/3"]
LABELS = np.array([0, 1, 2])
A = np.array([[0.7, 0.1, 0.1, 0.1],     # right
              [0.6, 0.2, 0.1, 0.1],     # wrong
              [0.1, 0.1, 0.5, 0.3]], dtype=np.float32)   # right
B = np.array([[0.1, 0.6, 0.2, 0.1],     # wrong
              [0.1, 0.8, 0.05, 0.05],   # right
              [0.2, 0.1, 0.6, 0.1]], dtype=np.float32)   # right


def write(path, scores, ids=IDS, labels=LABELS, protocol="8x3x2", **extra):
    """Through test.py's own writer, plus optional extra fields."""
    save_scores(path, ScoreSet(scores=scores, labels=np.asarray(labels), indices=np.arange(len(ids)),
                               video_ids=list(ids), num_views=6), CLASSES, protocol)
    if extra:
        data = dict(np.load(path))
        data.update({k: np.array(v) for k, v in extra.items()})
        np.savez_compressed(path, **data)
    return str(path)


def test_weighted_fusion_by_hand_with_reordered_ids(tmp_path):
    a = write(tmp_path / "a.npz", A)
    order = [2, 0, 1]  # the same videos in another order
    b = write(tmp_path / "b.npz", B[order], ids=[IDS[i] for i in order], labels=LABELS[order], protocol="16x3x2")
    out = tmp_path / "fused.npz"
    result = fuse_files([a, b], [1, 3], out=out)
    expected = (1 * A + 3 * B) / 4
    fused = read_scores(out)
    assert fused.video_ids == IDS
    np.testing.assert_allclose(fused.scores, expected, rtol=1e-6)
    np.testing.assert_array_equal(fused.labels, LABELS)
    assert fused.class_names == CLASSES and fused.protocol == "8x3x2+16x3x2"
    assert [r["top1"] for r in result["inputs"]] == pytest.approx([200 / 3, 200 / 3])
    # weight 3 lets B's wrong first video win: 1/4 * 0.7 + 3/4 * 0.1 < 1/4 * 0.1 + 3/4 * 0.6
    assert result["fusion"]["top1"] == pytest.approx(200 / 3)
    assert result["inputs"][1]["weight"] == 3.0


def test_cli_table_and_json(tmp_path, capsys):
    a, b = write(tmp_path / "a.npz", A), write(tmp_path / "b.npz", B)
    assert main([a, b, "--out", str(tmp_path / "f.npz")]) == 0
    table = capsys.readouterr().out
    # equal weights: each file's mistake is outvoted by the other file
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()
            if line.startswith("| ")}
    assert rows["scores"] == ["weight", "protocol", "top-1", "top-5", "mean class"]
    assert rows[a][2] == "66.67" and rows["fusion"][2] == "100.00"
    assert main([a, b, "--weights", "1", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fusion"]["top1"] == pytest.approx(result["inputs"][0]["top1"])  # weight 0 drops B


def test_different_video_sets_name_the_file(tmp_path, capsys):
    a = write(tmp_path / "a.npz", A)
    b = write(tmp_path / "other.npz", B, ids=["v/1", "v/2", "v/9"])
    with pytest.raises(ValueError, match="other.npz does not hold the same videos"):
        fuse_files([a, b])
    assert main([a, b]) == 2
    assert "other.npz" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="common"):
        result = fuse_files([a, b], intersect=True, out=tmp_path / "common.npz")
    assert result["num_videos"] == 2
    assert read_scores(tmp_path / "common.npz").video_ids == ["v/1", "v/2"]


def test_refusals(tmp_path):
    a = write(tmp_path / "a.npz", A)
    five = write(tmp_path / "five.npz", np.full((3, 5), 0.2, dtype=np.float32))
    with pytest.raises(ValueError, match="five.npz has 5 classes"):
        fuse_files([a, five])
    relabelled = write(tmp_path / "relabelled.npz", B, labels=[0, 1, 3])
    with pytest.raises(ValueError, match="relabelled.npz: video 'v/3' has label 3"):
        fuse_files([a, relabelled])
    prob = write(tmp_path / "prob.npz", A, score_average="prob")
    logit = write(tmp_path / "logit.npz", B * 10, score_average="logit")
    with pytest.raises(ValueError, match="probabilities with logits"):
        fuse_files([prob, logit])
    assert fuse_files([prob, a])["score_average"] == "prob"  # a file without the field just fuses
    with pytest.raises(ValueError, match="2 weights for 3"):
        fuse_files([a, prob, a], [1, 1])
    with pytest.raises(ValueError, match="missing field"):
        np.savez(tmp_path / "bare.npz", scores=A)
        fuse_files([a, tmp_path / "bare.npz"])
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        fuse_files([a, tmp_path / "nothing.npz"])
