"""feature_baselines: kNN and the linear probe on known answers, all baselines on extracted toy features,
CLIP zero-shot with a text tower and its skip without one."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from side4video.tools import extract_features
from side4video.tools.feature_baselines import (
    KNN_TEMPERATURE,
    VideoFeatures,
    class_prompts,
    knn,
    knn_scores,
    linear_probe,
    main,
    tokenizer_for,
)
from tests.support import TINY_CLIP_JSON

_FEATURES = {}


@pytest.fixture(scope="module")
def features(workspace, tmp_path_factory):
    """Final-embedding features of the toy train and val videos (extracted once)."""
    if not _FEATURES:
        out = tmp_path_factory.mktemp("features")
        for split in ("train", "val"):
            code = extract_features.main(["--config", str(workspace.config), "--list",
                                          workspace.toy[f"{split}_frames_list"], "--root", workspace.toy["frames_root"],
                                          "--out", str(out / split), "--no_progress"])
            assert code == 0
            _FEATURES[split] = out / split
    return _FEATURES


def handmade(points, labels, names=("a", "b", "c")):
    return VideoFeatures(torch.as_tensor(points, dtype=torch.float32), torch.as_tensor(labels),
                         [str(i) for i in labels], list(names), {}, "handmade")


def test_knn_votes_by_hand():
    train_x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    train_y = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[2.0, 0.0]])  # cosine 1.0, 0.8, 0.0, -1.0 to the training points
    votes = knn_scores(train_x, train_y, query, num_classes=3, k=3)
    expected = torch.tensor([[math.exp(1 / KNN_TEMPERATURE), math.exp(0.8 / KNN_TEMPERATURE) + 1.0, 0.0]])
    torch.testing.assert_close(votes, expected)
    # two nearer neighbours of one class outvote one of another only by their summed weights
    votes = knn_scores(torch.tensor([[1.0, 0.1], [1.0, -0.1], [1.0, 0.0]]), torch.tensor([1, 1, 0]),
                       torch.tensor([[1.0, 0.0]]), num_classes=2, k=3)
    assert votes.argmax(dim=1).tolist() == [1]
    assert knn_scores(train_x, train_y, query, num_classes=3, k=1).argmax().item() == 0


def test_knn_and_linear_probe_on_separable_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0]])
    labels = torch.arange(3).repeat(10)
    train = handmade(centres[labels] + torch.randn(30, 4, generator=generator), labels.tolist())
    val_labels = torch.arange(3).repeat(3)
    val = handmade(centres[val_labels] + torch.randn(9, 4, generator=generator), val_labels.tolist())
    assert knn(train, val, k=5)["top1"] == 100.0
    result = linear_probe(train, val, iterations=50)
    assert result["top1"] == 100.0 and result["top5"] == 100.0
    assert result["weight_decay"] in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1) and len(result["sweep_holdout_top1"]) == 5
    # labels that the features do not carry: chance-level, not 100
    shuffled = handmade(val.features, [1, 2, 0, 1, 2, 0, 1, 2, 0])
    assert knn(train, shuffled, k=5)["top1"] == 0.0


def test_all_baselines_on_extracted_features(workspace, features, tmp_path, capsys):
    side = tmp_path / "results.json"
    side.write_text(json.dumps({"top1": 87.5, "top5": 100.0, "protocol": "8x1x1",
                                "checkpoint": {"head": "side4video"}}))
    code = main(["--features", str(features["train"]), "--val_features", str(features["val"]), "--config",
                 str(workspace.config), "--side_results", str(side), "--epochs", "30", "--k", "5", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["train_videos"] == 16 and result["val_videos"] == 8
    methods = [row["method"] for row in result["rows"]]
    assert methods[0] == "linear probe" and methods[1].startswith("kNN (k=5") and "zero-shot" in methods[2]
    for row in result["rows"]:
        assert 0 <= row["top1"] <= row["top5"] <= 100, row
        assert "skipped" not in row
    best = max(row["top1"] for row in result["rows"])
    assert result["side_network"]["gain_over_best_frozen"] == pytest.approx(87.5 - best)

    assert main(["--features", str(features["train"]), "--val_features", str(features["val"]),
                 "--method", "knn", "--side_results", str(side)]) == 0
    table = capsys.readouterr().out
    assert "| kNN (k=16, T=0.07)" in table and "trained side4video (8x1x1, test.py)" in table
    assert "the side network adds" in table


def test_zeroshot_skipped_without_a_text_tower(workspace, features, tmp_path, capsys):
    visual_only = tmp_path / "visual_only.safetensors"
    state = load_file(str(workspace.weights))
    save_file({k: v for k, v in state.items() if k.startswith("visual.")}, str(visual_only))
    args = ["--features", str(features["train"]), "--val_features", str(features["val"]), "--method", "zeroshot"]
    assert main(args + ["--config", str(workspace.config), "--opts", f"network.pretrained={visual_only}"]) == 0
    out = capsys.readouterr().out
    assert f"CLIP zero-shot skipped: the backbone weights ({visual_only}) have no text tower" in out
    assert main(args) == 0
    assert "skipped: needs --config" in capsys.readouterr().out


def test_zeroshot_needs_matching_backbone_and_embedding_features(workspace, features, tmp_path, capsys):
    other = tmp_path / "other.safetensors"
    from side4video.backbones.tiny import make_tiny_backbone
    make_tiny_backbone(TINY_CLIP_JSON, other, seed=1)
    code = main(["--features", str(features["train"]), "--val_features", str(features["val"]), "--method",
                 "zeroshot", "--config", str(workspace.config), "--opts", f"network.pretrained={other}"])
    assert code == 2 and "was extracted with tiny_clip" in capsys.readouterr().err
    tokens = tmp_path / "tokens"
    list_file = tmp_path / "two.txt"
    list_file.write_text("".join(open(workspace.toy["val_frames_list"]).readlines()[:2]))
    assert extract_features.main(["--config", str(workspace.config), "--list", str(list_file), "--root",
                                  workspace.toy["frames_root"], "--out", str(tokens), "--layers", "all",
                                  "--no_progress"]) == 0
    capsys.readouterr()
    assert main(["--features", str(features["train"]), "--val_features", str(tokens)]) == 2
    assert "holds layer tokens" in capsys.readouterr().err


def test_prompts_and_offline_tokenizers():
    assert class_prompts("playing_guitar")[0] == "a video of a person playing guitar."
    tokens = tokenizer_for(str(TINY_CLIP_JSON))(class_prompts("moving right"))
    assert tokens.shape == (6, 77) and tokens[0, 0].item() == 49406  # start-of-text of the CLIP BPE vocabulary
    assert tokenizer_for("ViT-B/16")(["a"]).shape == (1, 77)


def test_side_results_on_other_videos_are_flagged(features, tmp_path):
    """--side_results measured on another video set than the features: the row says so (by the ids of the
    scores.npz next to results.json, else by the count), instead of a silent comparison."""
    import numpy as np

    from side4video.tools.feature_baselines import load_video_features, side_network_row
    val = load_video_features(features["val"])
    side = tmp_path / "results.json"
    side.write_text(json.dumps({"top1": 87.5, "top5": 100.0, "num_videos": len(val.video_ids)}))
    assert side_network_row(side, val)["mismatch"] is None
    side.write_text(json.dumps({"top1": 87.5, "top5": 100.0, "num_videos": 200}))
    assert side_network_row(side, val)["mismatch"] == (f"{side} was measured on 200 videos, the features cover "
                                                       f"{len(val.video_ids)}")
    ids = list(val.video_ids)
    np.savez(tmp_path / "scores.npz", video_ids=np.array(ids[:-1] + ["val/elsewhere"]))
    assert side_network_row(side, val)["mismatch"] == (f"{side} was measured on {len(ids)} videos and the features "
                                                       f"cover {len(ids)}; 2 videos are in only one of them")
    np.savez(tmp_path / "scores.npz", video_ids=np.array(ids))
    assert side_network_row(side, val)["mismatch"] is None      # the ids agree (the count is not consulted)
