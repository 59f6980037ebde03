"""extract_features: shapes and values per mode, index.json, unreadable videos, byte-identical resume after SIGKILL."""
import json
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file

from side4video.tools.extract_features import iter_features, main, read_index
from tests.support import run_module


def extract(ws, list_file, root, out, *extra, opts=()):
    code = main(["--config", str(ws.config), "--list", str(list_file), "--root", str(root), "--out", str(out),
                 "--no_progress", *extra, "--opts", *opts])
    assert code == 0
    return read_index(out)


def first_videos(ws, tmp_path, count):
    lines = open(ws.toy["val_frames_list"]).read().splitlines()[:count]
    path = tmp_path / f"first{count}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_embedding_values_and_index(workspace, tmp_path):
    """The default output is encode_image of every frame of the test views; index.json describes it."""
    from side4video.data import create_dataset, normalize_frames
    from side4video.engine.builders import backbone_from_config
    list_file = first_videos(workspace, tmp_path, 3)
    out = tmp_path / "emb"
    index = extract(workspace, list_file, workspace.toy["frames_root"], out, "--test_clips", "2", "--shard_size", "2")
    assert index["feature"] == "embedding" and index["layers"] is None and index["pool"] is None
    assert index["views"] == {"crops": 1, "clips": 2, "num_views": 2, "frames": 8} and index["protocol"] == "8x1x2"
    assert index["num_videos"] == 3 and index["num_shards"] == 2 and index["unreadable"] == []
    assert index["arch"] == "tiny_clip" and len(index["backbone_sha256"]) == 64
    assert index["class_names"][0] == "moving right" and index["list"] == str(list_file)
    assert index["throughput"]["videos"] == 3 and index["throughput"]["frames_per_s"] > 0
    assert [v["shard"] for v in index["videos"]] == [0, 0, 1]
    assert index["videos"][0]["key"] == "val_00001" and index["videos"][0]["video_id"] == "val/00001"
    assert (out / "labels.csv").read_text().splitlines()[1] == "0,moving right"
    assert sorted(p.name for p in out.iterdir()) == ["features-00000.json", "features-00000.safetensors",
                                                     "features-00001.json", "features-00001.safetensors",
                                                     "index.json", "labels.csv"]

    cfg = workspace.load_config(f"data.val_list={list_file}")
    dataset = create_dataset(cfg.data, "test", test_crops=1, test_clips=2, seed=cfg.seed)
    backbone = backbone_from_config(cfg)
    for (video, tensor), item in zip(iter_features(out), (dataset[i] for i in range(3))):
        assert video["shape"] == [2, 8, 32] and list(tensor.shape) == [2, 8, 32] and tensor.dtype == torch.float32
        frames = normalize_frames(item["frames"], cfg.data.mean, cfg.data.std)
        expected = backbone.encode_image(frames.flatten(0, 1)).reshape(2, 8, 32)
        torch.testing.assert_close(tensor, expected, rtol=1e-4, atol=1e-5)


def test_layer_pools(workspace, tmp_path):
    """cls and mean are the class token and the patch mean of the stored token sequences."""
    list_file = first_videos(workspace, tmp_path, 2)
    root = workspace.toy["frames_root"]
    tensors = {}
    for pool in ("cls", "mean", "tokens"):
        index = extract(workspace, list_file, root, tmp_path / pool, "--layers", "every_other", "--pool", pool)
        assert index["layers"] == [1, 3] and index["pool"] == pool
        tensors[pool] = [t for _, t in iter_features(tmp_path / pool)]
    # tiny CLIP: 4 layers of width 64, 64 px / patch 8 -> 1 + 64 tokens
    assert tensors["cls"][0].shape == tensors["mean"][0].shape == (1, 8, 2, 64)
    assert tensors["tokens"][0].shape == (1, 8, 2, 65, 64)
    for cls, mean, tokens in zip(tensors["cls"], tensors["mean"], tensors["tokens"]):
        torch.testing.assert_close(cls, tokens[..., 0, :])
        torch.testing.assert_close(mean, tokens[..., 1:, :].mean(dim=-2))
    index = extract(workspace, list_file, root, tmp_path / "picked", "--layers=-1,0", "--dtype", "float16")
    assert index["layers"] == [0, 3] and index["pool"] == "cls" and index["videos"][0]["dtype"] == "float16"


def test_settings_mismatch_and_bad_arguments(workspace, tmp_path, capsys):
    list_file = first_videos(workspace, tmp_path, 2)
    root = workspace.toy["frames_root"]
    extract(workspace, list_file, root, tmp_path / "out")
    code = main(["--config", str(workspace.config), "--list", str(list_file), "--root", root, "--out",
                 str(tmp_path / "out"), "--layers", "all", "--no_progress"])
    assert code == 2 and "features-00000.json was written with different settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", str(workspace.config), "--list", str(list_file), "--root", root, "--out", "x",
              "--pool", "mean"])
    assert "--pool applies to layer tokens" in capsys.readouterr().err


def test_unreadable_video_is_listed_and_skipped(workspace, tmp_path):
    root = tmp_path / "videos"
    shutil.copytree(workspace.toy["videos_root"], root)
    (root / "val" / "00002.mp4").write_bytes(b"\x00" * 100)
    lines = open(workspace.toy["val_videos_list"]).read().splitlines()[:3]
    list_file = tmp_path / "list.txt"
    list_file.write_text("\n".join(lines) + "\n")
    index = extract(workspace, list_file, root, tmp_path / "out")
    assert [v["video_id"] for v in index["videos"]] == ["val/00001.mp4", "val/00003.mp4"]
    [bad] = index["unreadable"]
    assert bad["video_id"] == "val/00002.mp4" and bad["index"] == 1 and "cannot open video" in bad["reason"]
    assert index["num_videos"] == 3 and index["num_extracted"] == 2
    assert sorted(load_file(str(tmp_path / "out" / "features-00000.safetensors"))) == ["val_00001.mp4",
                                                                                      "val_00003.mp4"]


def test_resume_after_sigkill_is_byte_identical(workspace, tmp_path):
    args = ["--config", str(workspace.config), "--list", workspace.toy["val_frames_list"], "--root",
            workspace.toy["frames_root"], "--shard_size", "2", "--batch_size", "2", "--no_progress",
            "--layers", "2,", "--pool", "mean"]
    module = "side4video.tools.extract_features"
    resumed, fresh = tmp_path / "resumed", tmp_path / "fresh"
    killed = run_module("tests.fault_injection", "extract", "--kill-after-shards", "2", "--", *args,
                        "--out", str(resumed))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in resumed.glob("features-*.json")) == ["features-00000.json", "features-00001.json"]
    assert not (resumed / "index.json").exists()
    first_shard = (resumed / "features-00000.safetensors").stat().st_mtime_ns

    finished = run_module(module, *args, "--out", str(resumed))
    assert finished.returncode == 0, finished.stderr
    assert (resumed / "features-00000.safetensors").stat().st_mtime_ns == first_shard  # kept, not redone
    assert json.loads((resumed / "index.json").read_text())["throughput"]["videos"] == 4  # the 2 missing shards

    uninterrupted = run_module(module, *args, "--out", str(fresh))
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in resumed.iterdir()) and len(names) == 2 * 4 + 2
    for name in names:
        if name == "index.json":  # identical but for the timing of each run
            a, b = (json.loads((d / name).read_text()) for d in (resumed, fresh))
            a.pop("throughput"), b.pop("throughput")
            assert a == b
            assert (resumed / name).read_text().split('"throughput"')[0] == (fresh / name).read_text().split(
                '"throughput"')[0]
        else:
            assert (resumed / name).read_bytes() == (fresh / name).read_bytes(), name


def test_two_processes_through_the_launcher_script(workspace, tmp_path):
    """scripts/extract_features.sh with GPUS=2: rank r writes shards r, r+2, ...; rank 0 writes the index after
    both finished; the files equal a one-process run's."""
    import subprocess

    from tests.support import REPO, child_env
    args = ["--shard_size", "3", "--batch_size", "2", "--no_progress", "--test_crops", "3"]
    single = extract(workspace, workspace.toy["val_frames_list"], workspace.toy["frames_root"], tmp_path / "one",
                     *args)
    env = child_env(GPUS="2")
    run = subprocess.run(["sh", "scripts/extract_features.sh", str(workspace.config), workspace.toy["val_frames_list"],
                          workspace.toy["frames_root"], str(tmp_path / "two"), *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    two = read_index(tmp_path / "two")
    assert two["throughput"]["processes"] == 2 and single["throughput"]["processes"] == 1
    assert two["num_shards"] == 3 and two["videos"] == single["videos"]
    for shard in range(3):
        name = f"features-{shard:05d}.safetensors"
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
