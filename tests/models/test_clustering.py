"""Full-video clustering: cluster shapes and rules, the cluster assembler's pseudo-frames, padding, memory, config."""
from __future__ import annotations

import gc
import json
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from side4video.backbones import create_backbone
from side4video.models.clustering import (
    ClusterAssembler,
    assignment,
    binarise,
    cluster_frames,
    cumulative_clusters,
    hamming_distances,
    l2_distances,
    short_video_bounds,
    slope_clusters,
)

ASSETS = Path(__file__).resolve().parents[2] / "side4video" / "assets"
METHODS = ("cumulative", "slope")


def check_clusters(bounds: np.ndarray, frames: int, clusters: int) -> None:
    assert bounds.shape == (clusters, 2) and bounds.dtype == np.int64
    assert bounds[0, 0] == 0 and bounds[-1, 1] == frames
    assert np.all(bounds[:, 1] > bounds[:, 0])                 # non-empty
    assert np.all(bounds[1:, 0] == bounds[:-1, 1])             # contiguous and ordered
    owner = assignment(bounds)
    assert owner.shape == (frames,) and np.all(np.diff(owner) >= 0)
    assert np.array_equal(np.unique(owner), np.arange(clusters))


# -- pure functions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_exactly_k_contiguous_ordered_non_empty_clusters_cover_every_frame(method):
    rng = np.random.default_rng(0)
    generators = [
        lambda f: rng.random(f - 1),                                                   # dense change
        lambda f: rng.random(f - 1) * (rng.random(f - 1) < 0.05),                      # a few jumps
        lambda f: np.where(rng.random(f - 1) < 0.02, 50.0, 1e-3) * rng.random(f - 1),  # huge isolated jumps
        lambda f: rng.integers(0, 3, f - 1) / 4,                                       # many ties
        lambda f: np.zeros(f - 1),                                                     # no change at all
        lambda f: np.eye(1, f - 1, f - 2).ravel() if f > 1 else np.zeros(0),          # one jump at the end
        lambda f: np.eye(1, f - 1, 0).ravel() if f > 1 else np.zeros(0),              # one jump at the start
    ]
    for trial in range(400):
        clusters = int(rng.choice([1, 2, 3, 5, 8, 16]))
        frames = int(rng.integers(clusters, 201)) if trial % 7 else clusters   # also F == K
        d = generators[trial % len(generators)](frames)
        check_clusters(cluster_frames(d, clusters, method), frames, clusters)


@pytest.mark.parametrize("method", METHODS)
def test_fewer_frames_than_clusters_repeat_frames_evenly(method):
    for frames, expected in [(3, [0, 0, 0, 1, 1, 1, 2, 2]), (1, [0] * 8), (7, [0, 0, 1, 2, 3, 4, 5, 6])]:
        bounds = cluster_frames(np.linspace(0, 1, frames - 1), 8, method)
        assert bounds.shape == (8, 2)
        assert bounds[:, 0].tolist() == expected and np.all(bounds[:, 1] == bounds[:, 0] + 1)
        assert np.array_equal(bounds, short_video_bounds(frames, 8))


def test_cumulative_clusters_share_the_change_budget_equally():
    # D = [0, .5, .5, .5, .5, 1, 1.25, 1.5, 1.75, 2]; D_F = 2, budget 0.5; a frame on a boundary stays earlier
    d = [0.5, 0, 0, 0, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert assignment(cumulative_clusters(d, 4)).tolist() == [0, 0, 0, 0, 0, 1, 2, 2, 3, 3]
    # a constant change rate gives equal lengths
    assert assignment(cumulative_clusters(np.ones(11), 4)).tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    # one jump worth several budgets: the colliding cut moves to the frame after the jump
    d = [0.125, 0.125, 3.0, 0.125, 0.125, 0.125]
    assert assignment(cumulative_clusters(d, 3)).tolist() == [0, 0, 0, 1, 2, 2, 2]
    # ... or before it, when the jump is at the very end
    d = [0.125, 0.125, 0.125, 0.125, 3.0]
    assert assignment(cumulative_clusters(d, 3)).tolist() == [0, 0, 0, 0, 1, 2]
    # D_F = 0: the first K frames start the clusters, the last one keeps the rest
    assert assignment(cumulative_clusters(np.zeros(5), 3)).tolist() == [0, 1, 2, 2, 2, 2]


def test_slope_clusters_cut_at_the_largest_distances():
    d = [0.1, 0.9, 0.2, 0.2, 0.7, 0.1, 0.3]
    assert assignment(slope_clusters(d, 3)).tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert assignment(slope_clusters(d, 4)).tolist() == [0, 0, 1, 1, 1, 2, 2, 3]
    # ties go to the earlier position, deterministically
    assert assignment(slope_clusters([0.5, 0.5, 0.0, 0.5], 3)).tolist() == [0, 1, 2, 2, 2]
    assert assignment(slope_clusters(np.zeros(4), 3)).tolist() == [0, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="method"):
        cluster_frames(d, 3, "kmeans")


def test_binarise_mean_centred_and_hamming_fraction():
    features = np.array([[1.0, 2.0, 0.0, 4.0], [3.0, 2.0, 1.0, 0.0], [5.0, 8.0, 2.0, 0.0]])  # mean [3, 4, 1, 4/3]
    bits = binarise(features)
    assert bits.tolist() == [[False, False, False, True], [False, False, False, False], [True, True, True, False]]
    assert hamming_distances(bits).tolist() == [0.25, 0.75]
    torch_bits = binarise(torch.tensor(features))
    assert torch_bits.tolist() == bits.tolist()
    assert torch.allclose(hamming_distances(torch_bits), torch.tensor([0.25, 0.75]))
    # the mean comes from the valid frames only
    assert binarise(features, valid=[True, True, False])[2].tolist() == [True, True, True, False]
    assert binarise(features, valid=[True, True, False])[0].tolist() == [False, False, False, True]


# -- the assembler -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        torch.manual_seed(0)
        return create_backbone(ASSETS / "tiny_clip.json", pretrained=False)


def scenes(lengths, size=64, seed=0):
    """Piecewise-constant frames: scene i (random pixels) repeated lengths[i] times, [F, 3, S, S]."""
    generator = torch.Generator().manual_seed(seed)
    images = [torch.randn(1, 3, size, size, generator=generator).expand(n, -1, -1, -1) for n in lengths]
    return torch.cat(images).contiguous()


def padded_batch(videos):
    longest = max(len(v) for v in videos)
    frames = torch.full((len(videos), longest) + tuple(videos[0].shape[1:]), float("nan"))
    mask = torch.zeros(len(videos), longest, dtype=torch.bool)
    for i, video in enumerate(videos):
        frames[i, :len(video)] = video
        mask[i, :len(video)] = True
    return frames, mask


def test_slope_assembler_finds_scene_changes(tiny):
    video = scenes([5, 4, 6])
    bounds = ClusterAssembler(clusters=3, method="slope", chunk=4).cluster_bounds(tiny, video[None])
    assert bounds[0].tolist() == [[0, 5], [5, 9], [9, 15]]


@pytest.mark.parametrize("method", METHODS)
def test_l2_distance_clusters_on_the_raw_feature_changes_across_chunks(tiny, method):
    """distance: l2 cuts where the layer's features move most, streamed over chunks like the Hamming code."""
    features = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [9.0, 12.0]])
    assert l2_distances(features).tolist() == [5.0, 0.0, 10.0]
    assert torch.allclose(l2_distances(torch.tensor(features)), torch.tensor([5.0, 0.0, 10.0]))
    generator = torch.Generator().manual_seed(3)
    video = torch.randn(11, 3, 64, 64, generator=generator)
    video[4:7] = video[3] + 0.01 * torch.randn(3, 3, 64, 64, generator=generator)  # a nearly static stretch
    assembler = ClusterAssembler(clusters=4, method=method, chunk=3, distance="l2")
    layer = tiny.resolve_layers([0])[0]
    feats = tiny.tap(video, layers=[layer], embedding=False).patch_tokens[0].flatten(1).double()
    expected = cluster_frames(l2_distances(feats).numpy(), 4, method)
    assert assembler.cluster_bounds(tiny, video[None])[0].tolist() == expected.tolist()
    hamming = ClusterAssembler(clusters=4, method=method, chunk=3).cluster_bounds(tiny, video[None])[0]
    expected_hamming = cluster_frames(hamming_distances(binarise(feats)).numpy(), 4, method)
    assert hamming.tolist() == expected_hamming.tolist()


@pytest.mark.parametrize("method", METHODS)
def test_pseudo_frames_are_the_means_of_their_members_and_padding_never_joins(tiny, method):
    torch.manual_seed(1)
    long_video = scenes([3, 2, 4, 4], seed=1) + 0.3 * torch.randn(13, 3, 64, 64)
    short_video = torch.randn(9, 3, 64, 64)
    frames, mask = padded_batch([long_video, short_video])         # padding frames are NaN
    assembler = ClusterAssembler(clusters=4, method=method, chunk=5)  # chunks span both videos
    out = assembler(tiny, frames, layers=[1, 3], embedding=True, mask=mask)

    assert out.num_frames == 4 and out.layers == [1, 3]
    assert out.frames.shape == (2, 4, 3, 64, 64)
    assert [c.shape for c in out.cls_tokens] == [(8, 1, 64)] * 2
    assert [p.shape for p in out.patch_tokens] == [(8, 64, 64)] * 2
    assert out.embedding.shape == (8, 32)
    for tensor in [out.frames, out.embedding, *out.cls_tokens, *out.patch_tokens]:
        assert torch.isfinite(tensor).all()                          # no NaN padding frame was averaged
    for b, (video, bounds) in enumerate(zip([long_video, short_video], assembler.last_bounds)):
        check_clusters(bounds, len(video), 4)
        for k, (start, end) in enumerate(bounds.tolist()):
            members = tiny.tap(video[start:end], layers=[1, 3], embedding=True)
            row = b * 4 + k
            torch.testing.assert_close(out.frames[b, k], video[start:end].mean(0))
            torch.testing.assert_close(out.embedding[row], members.embedding.mean(0), atol=1e-5, rtol=1e-5)
            for i in range(2):
                torch.testing.assert_close(out.cls_tokens[i][row], members.cls_tokens[i].mean(0),
                                           atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(out.patch_tokens[i][row], members.patch_tokens[i].mean(0),
                                           atol=1e-5, rtol=1e-5)

    # each video alone (no mask, one chunk: the cached-feature path) clusters and averages the same way
    alone = ClusterAssembler(clusters=4, method=method, chunk=64)
    single = alone(tiny, short_video[None], layers=[1, 3], embedding=True)
    assert np.array_equal(alone.last_bounds[0], assembler.last_bounds[1])
    torch.testing.assert_close(single.patch_tokens[1], out.patch_tokens[1][4:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single.frames[0], out.frames[1])


def test_short_videos_and_no_tapped_layers(tiny):
    video = torch.randn(3, 3, 64, 64)
    out = ClusterAssembler(clusters=8)(tiny, video[None], layers=[], embedding=True)
    assert out.num_frames == 8 and out.cls_tokens == [] and out.patch_tokens == []
    picked = [0, 0, 0, 1, 1, 1, 2, 2]  # floor(k * 3 / 8)
    torch.testing.assert_close(out.frames[0], video[picked])
    torch.testing.assert_close(out.embedding, tiny.tap(video[picked], layers=[], embedding=True).embedding,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no valid frame"):
        ClusterAssembler()(tiny, video[None], layers=[0], embedding=False, mask=torch.zeros(1, 3, dtype=torch.bool))


class RecordingBackbone:
    """Wraps a FrozenEncoder: records every tap call, and what the caller keeps alive between calls."""

    def __init__(self, inner, inputs: torch.Tensor):
        self.inner, self.dtype = inner, inner.dtype
        self.calls: list[tuple[int, tuple[int, ...], bool]] = []
        self.returned: list[weakref.ref] = []
        self.max_outputs_alive = 0
        self.max_kept_bytes = 0
        self._excluded = {p.untyped_storage().data_ptr() for p in inner.state_dict().values()}
        self._excluded.add(inputs.untyped_storage().data_ptr())
        self.baseline = self.live_tensor_bytes()  # whatever else the test process holds

    def resolve_layers(self, layers):
        return self.inner.resolve_layers(layers)

    def live_tensor_bytes(self) -> int:
        """Bytes of all live tensor storages but the weights and the input frames (deduplicated)."""
        seen = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # isinstance on some lazily deprecated torch objects warns
            for obj in gc.get_objects():
                if isinstance(obj, torch.Tensor) and not obj.is_meta:
                    try:
                        storage = obj.untyped_storage()
                        pointer = storage.data_ptr()
                    except RuntimeError:
                        # fake or functional tensors (left in the heap by an export test in the same process) have
                        # no data: they hold no memory of this computation
                        continue
                    if pointer not in self._excluded:
                        seen[pointer] = storage.nbytes()
        return sum(seen.values())

    def tap(self, images, layers, embedding):
        self.max_outputs_alive = max(self.max_outputs_alive, sum(r() is not None for r in self.returned))
        if len(self.calls) % 4 == 1:  # a full scan of the heap is slow: every 4th call (each pass has 16)
            kept = self.live_tensor_bytes() - self.baseline - images.nbytes
            self.max_kept_bytes = max(self.max_kept_bytes, kept)
        out = self.inner.tap(images, layers=layers, embedding=embedding)
        self.calls.append((images.shape[0], tuple(out.layers), embedding))
        tensors = out.cls_tokens + out.patch_tokens + ([out.embedding] if out.embedding is not None else [])
        self.returned = [r for r in self.returned if r() is not None] + [weakref.ref(t) for t in tensors]
        return out


def test_memory_stays_bounded_on_a_long_video(tmp_path):
    config = json.loads((ASSETS / "tiny_clip.json").read_text())
    config["vision_cfg"].update(image_size=32, layers=2, width=32, head_width=16)
    config["embed_dim"] = 16
    (tmp_path / "tiny32.json").write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        inner = create_backbone(tmp_path / "tiny32.json", pretrained=False)
    frames_count, chunk, clusters = 1000, 64, 8
    video = torch.randn(1, frames_count, 3, 32, 32)
    backbone = RecordingBackbone(inner, video)
    assembler = ClusterAssembler(clusters=clusters, chunk=chunk, feature_layer=0)
    out = assembler(backbone, video, layers=[0, 1], embedding=True)

    assert out.num_frames == clusters and out.patch_tokens[1].shape == (clusters, 16, 32)
    check_clusters(assembler.last_bounds[0], frames_count, clusters)
    sizes = [n for n, _, _ in backbone.calls]
    assert max(sizes) <= chunk and sum(sizes) == 3 * frames_count
    calls_per_pass = -(-frames_count // chunk)
    feature_calls, model_calls = backbone.calls[:2 * calls_per_pass], backbone.calls[2 * calls_per_pass:]
    assert all(layers == (0,) and not embedding for _, layers, embedding in feature_calls)  # stop-early passes
    assert all(layers == (0, 1) and embedding for _, layers, embedding in model_calls)
    # at most one chunk's outputs survive into the next call; nothing survives the assembler
    assert backbone.max_outputs_alive <= 5
    token_bytes_per_frame = 2 * (1 + 16) * 32 * 4 + 16 * 4
    every_frame = frames_count * token_bytes_per_frame
    assert backbone.max_kept_bytes < every_frame / 4, (backbone.max_kept_bytes, every_frame)
    del out
    gc.collect()
    assert all(r() is None for r in backbone.returned)


# -- config --------------------------------------------------------------------------------------------------
def test_config_accepts_the_cluster_assembler_and_hints_at_typos():
    from side4video.config import ConfigError, load_config
    from side4video.models.assembly import create_assembler

    cfg = load_config(None, ["data.num_classes=4", "network.assembler={type: cluster, clusters: 8}"])
    assert dict(cfg.network.assembler) == {"type": "cluster", "clusters": 8}
    assembler = create_assembler(cfg.network.assembler.toDict())
    assert isinstance(assembler, ClusterAssembler) and assembler.num_frames == 8
    assert assembler.frames_per_video == 512 and assembler.frame_indices(40).tolist() == list(range(40))
    cfg = load_config(None, ["data.num_classes=4",
                             "network.assembler={type: cluster, clusters: 4, method: slope, chunk: 16}"])
    assert cfg.network.assembler.method == "slope"
    with pytest.raises(ConfigError, match="did you mean 'clusters'"):
        load_config(None, ["data.num_classes=4", "network.assembler={type: cluster, cluster: 8}"])
    with pytest.raises(ValueError, match="method"):
        ClusterAssembler(method="kmeans")
    cfg = load_config(None, ["data.num_classes=4", "network.assembler={type: cluster, distance: l2}"])
    assert create_assembler(cfg.network.assembler.toDict()).distance == "l2"
    with pytest.raises(ConfigError, match="'distance' must be one of 'hamming', 'l2', got 'cosine'"):
        load_config(None, ["data.num_classes=4", "network.assembler={type: cluster, distance: cosine}"])


def test_sparse_toy_configs_load():
    from side4video.config import load_config
    from side4video.models.assembly import create_assembler

    repo = Path(__file__).resolve().parents[2]
    uniform = load_config(repo / "configs/toy/toy_sparse_uniform.yaml")
    cluster = load_config(repo / "configs/toy/toy_sparse_cluster.yaml")
    for cfg in (uniform, cluster):
        assert cfg.data.num_classes == 4 and cfg.data.train_list == "toy_sparse_data/train_frames.txt"
        assert cfg.data.num_segments == 8
    assert not uniform.network.assembler
    assembler = create_assembler(cluster.network.assembler.toDict())
    assert isinstance(assembler, ClusterAssembler) and assembler.num_frames == 8
    assert assembler.frame_indices(48).tolist() == list(range(48))
