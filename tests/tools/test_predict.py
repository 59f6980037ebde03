"""predict: the same scores as the test pipeline, readable text and JSON, per-video errors."""
import json
import shutil

import numpy as np
import pytest

from side4video.tools.predict import main

CLASS_NAMES = ["moving right", "moving left", "moving down", "moving up", "rotating clockwise",
               "rotating counter-clockwise", "growing", "shrinking"]


def predict_json(ws, target, capsys, *extra):
    code = main([str(target), "--config", str(ws.config), "--weights", str(ws.checkpoint), "--json", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out)  # stdout must be the JSON document and nothing else


def test_matches_collect_scores_on_a_one_video_test_list(workspace, tmp_path, capsys):
    """The predicted probabilities are test.py's scores for that video (3 crops x 2 clips)."""
    from side4video.data import ShardedEvalSampler, collate_eval, create_dataset, create_loader
    from side4video.engine.builders import backbone_from_config, load_trainable_weights, model_from_config
    from side4video.tasks.views import collect_scores
    video = "val/00003.mp4"
    list_file = tmp_path / "one.txt"
    list_file.write_text(f"{video} 0\n")
    cfg = workspace.load_config(f"data.val_list={list_file}", f"data.val_root={workspace.toy['videos_root']}")
    backbone = backbone_from_config(cfg)
    model = model_from_config(cfg, backbone)
    load_trainable_weights(model, workspace.checkpoint, backbone)
    dataset = create_dataset(cfg.data, "test", test_crops=3, test_clips=2, seed=cfg.seed)
    loader = create_loader(dataset, 1, sampler=ShardedEvalSampler(1), collate_fn=collate_eval)
    expected = collect_scores(backbone, model, loader, "cpu", mean=cfg.data.mean, std=cfg.data.std,
                              progress=False).scores[0]

    code, results = predict_json(workspace, f"{workspace.toy['videos_root']}/{video}", capsys,
                                 "--topk", "8", "--test_crops", "3", "--test_clips", "2")
    assert code == 0 and len(results) == 1 and results[0]["error"] is None
    got = np.zeros(8)
    for p in results[0]["predictions"]:
        got[p["class_id"]] = p["prob"]
        assert p["name"] == CLASS_NAMES[p["class_id"]]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert expected.max() > 0.2  # not a uniform distribution (1/8), so the comparison means something


def test_json_for_frame_folder_and_video(workspace, capsys):
    for target in (f"{workspace.toy['frames_root']}/val/00001", f"{workspace.toy['videos_root']}/val/00001.mp4"):
        code, results = predict_json(workspace, target, capsys, "--topk", "3")
        assert code == 0
        assert [r["video"] for r in results] == [target]
        predictions = results[0]["predictions"]
        probs = [p["prob"] for p in predictions]
        assert len(predictions) == 3
        assert probs == sorted(probs, reverse=True)
        assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
        assert set(predictions[0]) == {"class_id", "name", "prob"}


def test_text_output(workspace, capsys):
    target = f"{workspace.toy['videos_root']}/val/00002.mp4"
    code = main([target, "--config", str(workspace.config), "--weights", str(workspace.checkpoint), "--topk", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert lines[0] == target
    assert len(lines) == 3 and lines[1].lstrip().startswith("1. ") and lines[2].lstrip().startswith("2. ")
    assert any(name in lines[1] for name in CLASS_NAMES)


def test_directory_with_an_unreadable_video(workspace, tmp_path, capsys):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(f"{workspace.toy['videos_root']}/val/00001.mp4", folder / "good.mp4")
    shutil.copy(f"{workspace.toy['videos_root']}/val/00002.mp4", folder / "sub" / "good two.mp4")
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    (folder / "notes.txt").write_text("ignored: not a video extension")
    code, results = predict_json(workspace, folder, capsys, "--topk", "2")
    assert code == 1
    by_name = {r["video"].split("clips/")[1]: r for r in results}
    assert sorted(by_name) == ["broken.mp4", "good.mp4", "sub/good two.mp4"]
    assert "cannot open video" in by_name["broken.mp4"]["error"] and by_name["broken.mp4"]["predictions"] == []
    assert by_name["good.mp4"]["error"] is None and len(by_name["sub/good two.mp4"]["predictions"]) == 2


@pytest.mark.parametrize("target, message", [("missing.mp4", "no such video"), ("notes.txt", "not a video file"),
                                             ("empty", "no video files found")])
def test_bad_inputs(workspace, tmp_path, capsys, target, message):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    code = main([str(tmp_path / target), "--config", str(workspace.config), "--weights", str(workspace.checkpoint)])
    captured = capsys.readouterr()
    assert code == 2 and message in captured.err and captured.out == ""


def test_predict_needs_only_the_checkpoint_when_it_stores_its_config(workspace, tmp_path, capsys):
    """`predict VIDEO --weights CKPT`: the config stored in a training checkpoint is used when --config is left out;
    without one stored, a one-line error asks for --config."""
    import torch

    from side4video.config import to_plain_dict
    target = f"{workspace.toy['frames_root']}/val/00002"
    code, expected = predict_json(workspace, target, capsys, "--topk", "8")
    assert code == 0
    checkpoint = torch.load(workspace.checkpoint, weights_only=True)
    stored = tmp_path / "with_config.pt"
    torch.save({**checkpoint, "config": to_plain_dict(workspace.load_config())}, stored)
    assert main([target, "--weights", str(stored), "--json", "--topk", "8"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["predictions"] == expected[0]["predictions"]
    assert main([target, "--weights", str(workspace.checkpoint), "--json"]) == 2   # 2: nothing ran (1: a video failed)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stores no config" in err and "pass --config" in err


def test_a_checkpoint_of_another_head_is_one_line(workspace, tmp_path, capsys):
    import torch
    checkpoint = torch.load(workspace.checkpoint, weights_only=True)
    other = tmp_path / "frame_avg.pt"
    torch.save({**checkpoint, "head": "frame_avg"}, other)
    target = f"{workspace.toy['frames_root']}/val/00002"
    assert main([target, "--config", str(workspace.config), "--weights", str(other)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {other} holds a 'frame_avg' model, but the config asks for network.head: side4video\n"


def test_predict_leaves_the_callers_files_alone(workspace, tmp_path, capsys):
    """predict passes its records along in memory: the config is not edited and no list file is written next to
    it, into the working directory or into the data folder."""
    import os
    config = tmp_path / "mine.yaml"
    shutil.copy(workspace.config, config)
    before = config.read_bytes()
    watched = [tmp_path, os.getcwd(), workspace.toy["frames_root"]]
    listing = {str(d): sorted(os.listdir(d)) for d in watched}
    target = f"{workspace.toy['frames_root']}/val/00001"
    assert main([target, "--config", str(config), "--weights", str(workspace.checkpoint), "--json"]) == 0
    capsys.readouterr()
    assert config.read_bytes() == before
    assert {str(d): sorted(os.listdir(d)) for d in watched} == listing
