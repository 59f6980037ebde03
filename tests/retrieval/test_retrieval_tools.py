"""The retrieval tools on a checkpoint trained for one short epoch on the toy: an extracted index evaluates to
test.py's numbers exactly, a killed extraction resumes to the same bytes, unreadable videos are listed and never
found, and search ranks the indexed videos by the model's own similarity."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from side4video.retrieval.similarity import mean_pooled_similarity
from side4video.tools import retrieval_index, search
from side4video.tools.search import VideoSearch
from tests.support import run_script, write_toy_retrieval_config

pytestmark = pytest.mark.slow

SHARD_SIZE = "32"   # 64 test videos: 2 shards, each a multiple of the batch size (16), so batches are test.py's


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy (16 training videos, 64 test videos, 4 frames), one epoch of training, and test.py on its checkpoint."""
    root = tmp_path_factory.mktemp("retrieval_tools")
    config, info = write_toy_retrieval_config(root, train_videos=16, epochs=1)
    run = run_script(["train.py", "--config", str(config), "--output", str(root / "run")])
    assert run.returncode == 0, run.stderr[-3000:]
    weights = root / "run" / "checkpoints" / "last.pt"
    tested = run_script(["test.py", "--config", str(config), "--weights", str(weights), "--output",
                         str(root / "test")])
    assert tested.returncode == 0, tested.stderr[-3000:]
    return {"root": root, "config": config, "weights": weights, "test": root / "test", "frames": info["frames"]}


def _extract(trained, out, *extra) -> int:
    return retrieval_index.main(["extract", "--weights", str(trained["weights"]), "--config", str(trained["config"]),
                                 "--out", str(out), "--shard_size", SHARD_SIZE, "--device", "cpu", "--no_progress",
                                 *extra])


@pytest.fixture(scope="module")
def index(trained):
    out = trained["root"] / "index"
    assert _extract(trained, out) == 0
    return out


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_the_index_holds_what_the_manifest_says(index):
    manifest = json.loads((index / "index.json").read_text())
    assert manifest["complete"] and manifest["num_videos"] == 64 and manifest["num_captions"] == 64
    assert [s["file"] for s in manifest["shards"]] == ["videos-00000.npz", "videos-00001.npz"]
    assert manifest["checkpoint"]["sim_header"] == "wti" and manifest["checkpoint"]["epoch"] == 1
    assert manifest["backbone"]["arch"] == "tiny_clip" and manifest["unreadable"] == []
    shard = np.load(index / "videos-00001.npz")
    assert shard["frames"].shape == (32, 4, 32) and list(shard["index"]) == list(range(32, 64))
    captions = np.load(index / "captions.npz")
    assert captions["sentence"].shape == (64, 32) and captions["words"].shape == (64, 77, 32)
    assert captions["word_mask"].shape == (64, 77) and list(captions["caption_video"]) == list(range(64))


def test_evaluate_from_the_index_equals_test_py(trained, index, tmp_path):
    out = tmp_path / "evaluated"
    assert retrieval_index.main(["evaluate", "--index", str(index), "--out", str(out), "--device", "cpu"]) == 0
    tested = json.loads((trained["test"] / "results.json").read_text())
    results = json.loads((out / "results.json").read_text())
    metrics = [k for k in tested if k.startswith(("t2v_", "v2t_"))]
    assert len(metrics) >= 10
    for key in (*metrics, "num_videos", "num_captions", "unreadable", "multi_caption", "text_to_video",
                "video_to_text", "data"):
        assert results[key] == tested[key], key
    assert results["checkpoint"]["epoch"] == tested["checkpoint"]["epoch"]
    ours, theirs = np.load(out / "sims.npz"), np.load(trained["test"] / "sims.npz")
    for key in ("sim", "captions", "caption_video", "video_ids"):
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_a_killed_extraction_resumes_to_the_same_files(trained, index, tmp_path, monkeypatch, capsys):
    out = tmp_path / "killed"
    written = []
    original = retrieval_index.write_video_shard

    def killed_before_the_second_shard(*args, **kwargs):
        if written:
            raise KeyboardInterrupt     # what Ctrl-C (or a kill between two shards) leaves behind
        written.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(retrieval_index, "write_video_shard", killed_before_the_second_shard)
    assert _extract(trained, out) == 130
    monkeypatch.undo()
    manifest = json.loads((out / "index.json").read_text())
    assert not manifest["complete"] and [s["shard"] for s in manifest["shards"]] == [0]
    assert not (out / "videos-00001.npz").exists() and not (out / "captions.npz").exists()
    capsys.readouterr()
    # an incomplete index is refused in one line by the readers
    assert retrieval_index.main(["evaluate", "--index", str(out)]) == 2
    assert search.main(["a query", "--index", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and "did not finish (1 of 2 video shards)" in err and "Traceback" not in err

    first = (out / "videos-00000.npz").stat().st_mtime_ns
    assert _extract(trained, out) == 0
    assert (out / "videos-00000.npz").stat().st_mtime_ns == first          # the complete shard was kept
    assert _files(out) == _files(index)                                    # the uninterrupted run's bytes
    capsys.readouterr()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert _extract(trained, out) == 0                                     # complete: nothing recomputed
    assert "nothing to do" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert _extract(trained, out, "--shard_size", "16") == 2               # other settings: refused
    assert "other settings" in capsys.readouterr().err


def test_unreadable_videos_are_listed_and_never_found(trained, tmp_path, capsys):
    frames = tmp_path / "frames"
    shutil.copytree(trained["frames"], frames)
    shutil.rmtree(frames / "video64")                                      # missing altogether
    for image in (frames / "video70").iterdir():                           # a folder without frames
        image.unlink()
    out = tmp_path / "index"
    # without --config: the checkpoint's stored config, with the data folder overridden
    assert retrieval_index.main(["--weights", str(trained["weights"]), "--out", str(out), "--device", "cpu",
                                 "--no_progress", "--opts", f"data.features_path={frames}"]) == 0
    manifest = json.loads((out / "index.json").read_text())
    assert [(u["index"], u["video_id"]) for u in manifest["unreadable"]] == [(0, "video64"), (6, "video70")]
    assert all(u["reason"] for u in manifest["unreadable"])
    assert "2 unreadable" in capsys.readouterr().out
    assert list(np.flatnonzero(~np.load(out / "videos-00000.npz")["valid"])) == [0, 6]
    found = VideoSearch(out, "cpu").search(["a red F moving left"], topk=64)[0]["results"]
    assert len(found) == 62 and not {0, 6} & {hit["video"] for hit in found}


def test_search_ranks_the_videos_by_the_models_similarity(trained, index, capsys):
    sims = np.load(trained["test"] / "sims.npz")                          # test.py's matrix (evaluate's too)
    # every caption at once (the extraction's text batch): exactly the evaluated matrix
    engine = VideoSearch(index, "cpu")
    np.testing.assert_array_equal(engine.scores(list(sims["captions"])).numpy(), sims["sim"])

    caption = 5
    text = str(sims["captions"][caption])
    capsys.readouterr()
    assert search.main([text, "--index", str(index), "--topk", "64", "--json", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    hits = result["results"]
    assert result["query"] == text and [h["rank"] for h in hits] == list(range(1, 65))
    row = sims["sim"][caption]
    videos = [h["video"] for h in hits]
    assert int(sims["caption_video"][caption]) in videos
    assert [h["video_id"] for h in hits] == [str(sims["video_ids"][v]) for v in videos]
    # one caption alone may differ from the batched one in the last bits: the order is the row's up to such ties
    np.testing.assert_allclose([h["score"] for h in hits], row[videos], atol=1e-6)
    np.testing.assert_allclose(row[videos], row[np.argsort(-row, kind="stable")], atol=1e-6)

    assert search.main([text, "a blue F rotating clockwise", "--index", str(index), "--topk", "2",
                        "--device", "cpu"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == json.dumps(text) and listing[3] == json.dumps("a blue F rotating clockwise")
    rank, score, video_id, path = listing[1].split()
    assert len(listing) == 6 and rank == "1" and float(score) == pytest.approx(hits[0]["score"], abs=1e-3)
    assert video_id in set(sims["video_ids"]) and path.endswith(video_id)


def test_a_missing_index_is_one_line(tmp_path, capsys):
    assert search.main(["anything", "--index", str(tmp_path / "none")]) == 2
    assert retrieval_index.main(["evaluate", "--index", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") and "index.json not found" in line for line in err)


def test_the_offline_head_scores_meanp_from_sentences_alone_and_wti_in_chunks():
    torch.manual_seed(0)
    sentence, words, frames = torch.randn(5, 8), torch.randn(5, 77, 8), torch.randn(3, 4, 8)
    mask = torch.zeros(5, 77, dtype=torch.bool)
    mask[:, :6] = True
    meanp = retrieval_index.SimilarityHead(8, "meanP")
    scores = retrieval_index.similarity_matrix(meanp, sentence, None, mask, frames, chunk=2, device=torch.device("cpu"),
                                               precision="fp32")
    torch.testing.assert_close(scores, mean_pooled_similarity(sentence, frames, torch.ones(3, 4, dtype=torch.bool)))
    wti = retrieval_index.SimilarityHead(8, "wti")
    chunked = retrieval_index.similarity_matrix(wti, sentence, words, mask, frames, chunk=2,
                                                device=torch.device("cpu"), precision="fp32")
    torch.testing.assert_close(chunked, wti.similarity(sentence, words, mask, frames))
