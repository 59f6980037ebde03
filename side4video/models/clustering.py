"""Full-video clustering ("No frame left behind", Liu et al., CVPR'21) as a clip assembler.

The frozen backbone sees every frame (or a dense stride) of a video. Per-frame features of an early layer
are binarised, the Hamming distance between neighbouring frames gives a change signal, and that signal cuts
the video into K *contiguous* clusters. Each cluster's tokens (of every tapped layer), embedding and pixels
are averaged into one pseudo-frame, so the side network sees K pseudo-frames however long the video is.

Notation (one video): F valid frames ``t = 0 .. F-1``; features ``a_t`` (a vector of D numbers); bits
``b_t``; distances ``d_j = dist(b_j, b_{j+1})`` for ``j = 0 .. F-2``; K clusters.

Clusters are returned as **bounds**: an int64 array ``[K, 2]`` of half-open frame ranges ``[start, end)``,
ordered in time. For ``F >= K`` they are non-empty, contiguous (``end_k == start_{k+1}``) and cover
``[0, F)`` exactly once. For ``F < K`` (too few frames to form K clusters) cluster k is the single frame
``floor(k * F / K)``: every frame is used, frames repeat evenly spread, and the order is kept (the rule the
segment sampler uses for videos shorter than T). :func:`assignment` turns bounds (``F >= K``) into a
per-frame cluster index ``[F]`` (non-decreasing).

The pure functions take numpy arrays (or anything ``np.asarray`` reads); :func:`binarise` and
:func:`hamming_distances` also take torch tensors and return the same kind.
"""
from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Mapping, Sequence

import numpy as np
import torch

from ..backbones.frozen import FrozenEncoder
from ..data.full_video import FullVideoSampler, collate_full_video, full_video_indices
from ..errors import ConfigError
from ..registry import Range
from .assembly import ASSEMBLERS, protocol_name
from .inputs import SideInputs

METHODS = ("cumulative", "slope")
FEATURES = ("patch", "cls", "tokens")
DISTANCES = ("hamming", "l2")


# -- pure clustering functions ------------------------------------------------------------------------------
def binarise(features, valid=None):
    """Bits of mean-centred features: ``b_t = a_t - mean_{s valid}(a_s) > 0``.

    Args:
        features: ``[F, D]`` per-frame features (torch or numpy).
        valid: optional bool ``[F]``; the mean is taken over valid frames only (rows of invalid frames are
            still binarised against that mean, callers drop them).
    Returns:
        bool ``[F, D]``, the same kind (torch / numpy) as ``features``.

    Centring makes the code meaningful for signed (ViT) features, where ``sign`` alone is mostly constant
    per channel; for post-ReLU features it plays the role of the paper's ``sign(a_t)``.
    """
    if isinstance(features, torch.Tensor):
        x = features.float()
        rows = x if valid is None else x[torch.as_tensor(valid, device=x.device, dtype=torch.bool)]
        return x > rows.mean(0, keepdim=True)
    x = np.asarray(features, dtype=np.float64)
    rows = x if valid is None else x[np.asarray(valid, dtype=bool)]
    return x > rows.mean(0, keepdims=True)


def hamming_distances(bits):
    """Fraction of differing bits between neighbouring frames: ``d_j = mean_i [b_j,i != b_{j+1},i]``.

    ``bits [F, D]`` (bool, torch or numpy) → ``d [F-1]`` float in ``[0, 1]`` (float32 torch / float64 numpy),
    the same as ``scipy.spatial.distance.hamming`` per pair.
    """
    if isinstance(bits, torch.Tensor):
        return (bits[1:] != bits[:-1]).float().mean(1)
    bits = np.asarray(bits, dtype=bool)
    if bits.shape[0] < 2:
        return np.zeros(0, dtype=np.float64)
    return (bits[1:] != bits[:-1]).mean(1, dtype=np.float64)



def l2_distances(features):
    """Euclidean distance between neighbouring frames' features: ``d_j = ||a_{j+1} - a_j||``.

    ``features [F, D]`` (torch or numpy) → ``d [F-1]`` (float32 torch / float64 numpy).
    """
    if isinstance(features, torch.Tensor):
        x = features.float()
        return (x[1:] - x[:-1]).norm(dim=1)
    x = np.asarray(features, dtype=np.float64)
    return np.linalg.norm(x[1:] - x[:-1], axis=1)

def _check(d, clusters: int) -> tuple[np.ndarray, int]:
    d = np.asarray(d, dtype=np.float64).reshape(-1)
    if clusters < 1:
        raise ValueError(f"the number of clusters must be positive, got {clusters}")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError("distances must be finite and non-negative")
    return d, d.size + 1


def short_video_bounds(num_frames: int, clusters: int) -> np.ndarray:
    """Bounds for ``F < K``: cluster k is the single frame ``floor(k * F / K)`` (frames repeat, evenly)."""
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    frame = (np.arange(clusters, dtype=np.int64) * num_frames) // clusters
    return np.stack([frame, frame + 1], axis=1)


def bounds_from_cuts(cuts: Sequence[int] | np.ndarray, num_frames: int) -> np.ndarray:
    """Strictly increasing cut positions ``p`` (a cluster starts at frame p, ``0 < p < F``) → bounds ``[K, 2]``."""
    cuts = np.asarray(cuts, dtype=np.int64).reshape(-1)
    if cuts.size and (np.any(np.diff(cuts) <= 0) or cuts[0] <= 0 or cuts[-1] >= num_frames):
        raise ValueError(f"cuts must be strictly increasing inside (0, {num_frames}), got {cuts.tolist()}")
    edges = np.concatenate([[0], cuts, [num_frames]]).astype(np.int64)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def assignment(bounds: np.ndarray) -> np.ndarray:
    """Contiguous covering bounds ``[K, 2]`` (``F >= K``) → cluster index per frame ``[F]`` (non-decreasing)."""
    bounds = np.asarray(bounds, dtype=np.int64)
    if bounds[0, 0] != 0 or np.any(bounds[1:, 0] != bounds[:-1, 1]) or np.any(bounds[:, 1] <= bounds[:, 0]):
        raise ValueError("assignment needs non-empty contiguous bounds starting at frame 0 (F >= K)")
    return np.repeat(np.arange(len(bounds), dtype=np.int64), bounds[:, 1] - bounds[:, 0])


def slope_clusters(d, clusters: int) -> np.ndarray:
    """Cut at the K-1 largest distances: ``d [F-1]`` → bounds ``[K, 2]``.

    A cut at distance ``d_j`` starts a new cluster at frame ``j + 1``. Ties are broken towards the earlier
    position (a stable sort of ``-d``), so with all distances equal (e.g. all zero) the clusters are the
    first K-1 frames alone and the rest of the video together. ``F < K``: :func:`short_video_bounds`.
    """
    d, frames = _check(d, clusters)
    if frames < clusters:
        return short_video_bounds(frames, clusters)
    order = np.argsort(-d, kind="stable")[:clusters - 1]
    return bounds_from_cuts(np.sort(order) + 1, frames)


def cumulative_clusters(d, clusters: int) -> np.ndarray:
    """Equal change budget per cluster: ``d [F-1]`` → bounds ``[K, 2]``.

    ``D_t = sum_{j<t} d_j`` (so ``D_0 = 0`` and ``D_{F-1} = D_F``, the total change). Frame t joins cluster

        ``c_t = #{k in 1..K-1 : D_t > k * D_F / K}``   (0-based),

    i.e. the smallest k (1-based) with ``D_t <= k * D_F / K``, the paper's rule: a frame exactly on a budget
    boundary stays in the earlier cluster. Equivalently cluster k (0-based) starts at the cut
    ``p_k = #{t : D_t <= k * D_F / K}`` for ``k = 1..K-1``.

    A jump larger than one budget ``D_F / K`` makes some ``p_k`` coincide (empty clusters). To always give K
    non-empty clusters, the cuts are repaired to the nearest strictly increasing sequence inside
    ``[1, F-1]``: forward ``p_k = max(p_k, p_{k-1} + 1)`` (``p_0 = 0``), then backward
    ``p_k = min(p_k, p_{k+1} - 1)`` (``p_K = F``). So a cut that collides moves to the frame(s) right after
    the jump (or before, at the video's end): the frames right after a large change get short clusters.

    ``D_F = 0`` (no bit changes at all): "take the first K frames" (the spec) — frames ``0..K-2`` are
    single-frame clusters and the last cluster holds frames ``K-1..F-1``, so every frame is still covered.
    (The same result as :func:`slope_clusters` on all-equal distances.) ``F < K``: :func:`short_video_bounds`.
    """
    d, frames = _check(d, clusters)
    if frames < clusters:
        return short_video_bounds(frames, clusters)
    if clusters == 1:
        return np.array([[0, frames]], dtype=np.int64)
    cumulative = np.concatenate([[0.0], np.cumsum(d)])  # D_t, t = 0..F-1
    total = cumulative[-1]
    if total <= 0:
        return bounds_from_cuts(np.arange(1, clusters), frames)
    levels = np.arange(1, clusters, dtype=np.float64) * total / clusters
    cuts = np.searchsorted(cumulative, levels, side="right").astype(np.int64)  # p_k = #{t : D_t <= level_k}
    # the last frame has D = total > every level, so p_k <= F - 1; repair collisions
    previous = 0
    for k in range(clusters - 1):
        cuts[k] = previous = max(cuts[k], previous + 1)
    following = frames
    for k in range(clusters - 2, -1, -1):
        cuts[k] = following = min(cuts[k], following - 1)
    return bounds_from_cuts(cuts, frames)


def cluster_frames(d, clusters: int, method: str = "cumulative") -> np.ndarray:
    """``cumulative`` or ``slope`` clustering of a distance sequence ``d [F-1]`` → bounds ``[K, 2]``."""
    if method == "cumulative":
        return cumulative_clusters(d, clusters)
    if method == "slope":
        return slope_clusters(d, clusters)
    raise ValueError(f"clustering method must be one of {METHODS}, got {method!r}")


# -- the clip assembler -------------------------------------------------------------------------------------
@ASSEMBLERS.register("cluster")
class ClusterAssembler:
    """Full-video clip assembler: every valid frame through the frozen backbone, K averaged pseudo-frames out.

    Called as ``assembler(backbone, frames [B, F_max, 3, H, W], layers=..., embedding=..., mask=[B, F_max])``
    (mask True = real frame; None = all frames real) → :class:`SideInputs` with ``num_frames = K``:

    * ``frames``: per-cluster mean pixels ``[B, K, 3, H, W]`` (the dtype of ``frames``);
    * ``cls_tokens`` / ``patch_tokens``: per tapped layer, per-cluster means ``[B*K, 1, W]`` / ``[B*K, N, W]``
      (in the backbone's precision, accumulated in fp32);
    * ``embedding``: per-cluster mean of the final embedding ``[B*K, E]`` when asked.

    Every pseudo-frame is exactly the mean of its member frames' tokens / pixels (not the tokens of the mean
    pixels). Frames whose mask is False never reach the backbone and never join a cluster.

    Memory and cost — three chunked passes over the valid frames of the batch (in order, video-major; a chunk
    may span two videos), all under no-grad:

    1. the feature layer only (``stop_early``): per-video sums → the per-video mean feature;
    2. the feature layer again: bits of the centred features and the Hamming distance to the previous frame,
       streamed (only the previous frame's bits are kept) → ``F - 1`` distances per video → clusters (numpy);
    3. the model's tapped layers (and the embedding if asked): each chunk's tokens and pixels are added into
       per-cluster sums (``index_add_``) and dropped.

    At any time the assembler holds one chunk's backbone outputs (``chunk`` frames), the per-video feature
    means (``B x D``) and the K-per-video accumulators (the size of the output), never every frame's tokens.
    Backbone cost: ``F x (feature_layer + 1)`` blocks twice plus ``F`` full passes (up to the last tapped
    layer, or all layers with the embedding); with ``feature_layer = 0`` on a 12-layer ViT that is about 17%
    over one pass. When all valid frames of the batch fit into one chunk, pass 2 reuses pass 1's features
    (two backbone calls instead of three). The clustering features are not kept for every frame because
    they are ``N x W`` numbers per frame (150k for ViT-B/16 at 224 px): 600 MB in fp32 for 1,000 frames.

    Args:
        clusters: K, pseudo-frames per video (the side network's T).
        method: ``cumulative`` (equal change budget) or ``slope`` (cuts at the K-1 largest distances).
        feature_layer: 0-based backbone layer (negative: from the end) whose tokens are binarised.
        feature: which tokens of that layer: ``patch`` (all patch tokens, flattened), ``cls`` (the class
            token) or ``tokens`` (both).
        distance: ``hamming`` (the paper's: bits of the mean-centred features, fraction of differing bits) or
            ``l2`` (Euclidean distance of the features themselves). Binarising spreads the change budget almost
            evenly over a clip whose informative frames are a small minority (the sparse-toy sweep in
            BENCHMARKS.md); ``l2`` keeps the magnitude of a change, so short bursts take a larger share.
        chunk: frames per backbone call.
        max_frames, stride: the full-video sampling the data pipeline should use
            (:func:`side4video.data.full_video.full_video_indices`); the assembler itself clusters whatever
            valid frames it is given.
    """

    name = "cluster"

    def frame_sampler(self, data_cfg):
        """Whole videos (a dense stride, at most ``max_frames`` frames) instead of T sampled frames."""
        return FullVideoSampler(max_frames=self.max_frames, stride=self.stride, random_shift=data_cfg.random_shift)

    def collate_fn(self, train: bool):
        """Clips of different lengths, zero-padded with a mask (``[B, V, F_max]`` views stacked for evaluation)."""
        return collate_full_video if train else functools.partial(collate_full_video, stack_views=True)

    def __init__(self, clusters: Annotated[int, Range(1)] = 8, method: Literal["cumulative", "slope"] = "cumulative",
                 feature_layer: int = 0, feature: Literal["patch", "cls", "tokens"] = "patch",
                 chunk: Annotated[int, Range(1)] = 64, max_frames: Annotated[int, Range(1)] = 512,
                 stride: Annotated[int, Range(1)] | None = None, distance: Literal["hamming", "l2"] = "hamming"):
        self.check_arguments(dict(clusters=clusters, method=method, feature=feature, chunk=chunk,
                                  max_frames=max_frames, stride=stride, distance=distance))
        self.clusters = clusters
        self.method = method
        self.feature_layer = int(feature_layer)
        self.feature = feature
        self.distance = distance
        self.chunk = chunk
        self.max_frames = max_frames
        self.stride = stride
        self.last_bounds: list[np.ndarray] = []  # per video of the last batch: bounds [K, 2] over its valid frames

    @staticmethod
    def check_arguments(arguments: Mapping[str, Any]) -> None:
        """The rules the constructor's annotations cannot state (called when the config loads, and again here)."""
        clusters, max_frames = arguments.get("clusters", 8), arguments.get("max_frames", 512)
        if not isinstance(clusters, int) or isinstance(clusters, bool) or clusters < 1:
            raise ConfigError(f"clip assembler 'cluster': clusters must be a positive integer, got {clusters!r}")
        if arguments.get("method", METHODS[0]) not in METHODS:
            raise ConfigError(f"clip assembler 'cluster': method must be one of {', '.join(METHODS)}, got "
                              f"{arguments['method']!r}")
        if arguments.get("feature", FEATURES[0]) not in FEATURES:
            raise ConfigError(f"clip assembler 'cluster': feature must be one of {', '.join(FEATURES)}, got "
                              f"{arguments['feature']!r}")
        if arguments.get("distance", DISTANCES[0]) not in DISTANCES:
            raise ConfigError(f"clip assembler 'cluster': distance must be one of {', '.join(DISTANCES)}, got "
                              f"{arguments['distance']!r}")
        for key in ("chunk", "max_frames"):
            value = arguments.get(key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"clip assembler 'cluster': {key} must be a positive integer, got {value!r}")
        stride = arguments.get("stride")
        if stride is not None and (not isinstance(stride, int) or isinstance(stride, bool) or stride < 1):
            raise ConfigError(f"clip assembler 'cluster': stride must be a positive integer or null, got {stride!r}")
        if isinstance(max_frames, int) and clusters > max_frames:
            raise ConfigError(f"clip assembler 'cluster': clusters ({clusters}) cannot exceed max_frames "
                              f"({max_frames}): every cluster would hold a repeated frame")

    # -- what the data pipeline needs ----------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        """T the model sees: K pseudo-frames."""
        return self.clusters

    def test_protocol(self, data_cfg, crops: int, clips: int) -> tuple[int, str]:
        """K pseudo-frames of the whole video per view: ``cluster8x3x1``."""
        return self.clusters, "cluster" + protocol_name(self.clusters, crops, clips)

    @property
    def frames_per_video(self) -> int:
        """The most frames per video the data pipeline hands over (variable length, padded with a mask)."""
        return self.max_frames

    def frame_indices(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """The 0-based frame indices to decode from a video of ``num_frames`` frames."""
        return full_video_indices(num_frames, self.max_frames, self.stride, rng=rng)

    def spec(self) -> dict:
        return dict(type=self.name, clusters=self.clusters, method=self.method, feature_layer=self.feature_layer,
                    feature=self.feature, chunk=self.chunk, max_frames=self.max_frames, stride=self.stride,
                    distance=self.distance)

    def state_dict(self) -> dict:
        return {}  # nothing trainable

    # -- assembly ------------------------------------------------------------------------------------------
    def _features(self, backbone: FrozenEncoder, images: torch.Tensor, layer: int) -> torch.Tensor:
        taps = backbone.tap(images, layers=[layer], embedding=False)
        parts = {"patch": [taps.patch_tokens[0]], "cls": [taps.cls_tokens[0]],
                 "tokens": [taps.cls_tokens[0], taps.patch_tokens[0]]}[self.feature]
        return torch.cat([p.flatten(1) for p in parts], dim=1).float()

    @torch.no_grad()
    def cluster_bounds(self, backbone: FrozenEncoder, frames: torch.Tensor,
                       mask: torch.Tensor | None = None) -> list[np.ndarray]:
        """Passes 1 and 2 only: bounds ``[K, 2]`` per video, over the video's valid frames (in order)."""
        rows, video, lengths = self._valid_rows(frames, mask)
        return self._cluster(backbone, frames.flatten(0, 1), rows, video, lengths)[0]

    def _valid_rows(self, frames: torch.Tensor, mask: torch.Tensor | None):
        if frames.dim() != 5:
            raise ValueError(f"expected frames [B, F, 3, H, W], got {tuple(frames.shape)}")
        batch, length = frames.shape[:2]
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.bool)
        mask = torch.as_tensor(mask).to("cpu", torch.bool)
        if mask.shape != (batch, length):
            raise ValueError(f"mask must be [B, F] = {(batch, length)}, got {tuple(mask.shape)}")
        lengths = mask.sum(1)
        if bool((lengths == 0).any()):
            raise ValueError(f"videos {torch.nonzero(lengths == 0).flatten().tolist()} have no valid frame")
        rows = torch.nonzero(mask.reshape(-1)).flatten()  # flat row b * F_max + t, video-major, in time order
        return rows, rows // length, lengths

    def _chunks(self, count: int):
        return [(s, min(s + self.chunk, count)) for s in range(0, count, self.chunk)]

    def _cluster(self, backbone, flat, rows, video, lengths):
        batch = len(lengths)
        layer = backbone.resolve_layers([self.feature_layer])[0]
        chunks = self._chunks(len(rows))
        device = flat.device
        # pass 1: per-video mean feature
        sums, cached = None, None
        for start, end in chunks:
            feats = self._features(backbone, flat[rows[start:end].to(device)], layer)
            if sums is None:
                sums = torch.zeros(batch, feats.shape[1], dtype=torch.float32, device=feats.device)
            sums.index_add_(0, video[start:end].to(feats.device), feats)
            cached = feats if len(chunks) == 1 else None
        means = sums / lengths.to(sums.device, torch.float32)[:, None]
        # pass 2: streamed distances between neighbouring valid frames of the same video (only the previous
        # frame's code is kept between chunks)
        distances, owners = [], []
        prev_code, prev_video = None, None
        for start, end in chunks:
            feats = cached if cached is not None else \
                self._features(backbone, flat[rows[start:end].to(device)], layer)
            vids = video[start:end].to(feats.device)
            code = feats > means[vids] if self.distance == "hamming" else feats
            if prev_code is not None:
                code_all, vids_all = torch.cat([prev_code, code]), torch.cat([prev_video, vids])
            else:
                code_all, vids_all = code, vids
            same = vids_all[1:] == vids_all[:-1]
            steps = hamming_distances(code_all) if self.distance == "hamming" else l2_distances(code_all)
            distances.append(steps[same].cpu())
            owners.append(vids_all[1:][same].cpu())
            prev_code, prev_video = code[-1:], vids[-1:]
            del feats, code, code_all
        distances = torch.cat(distances).double().numpy()
        owners = torch.cat(owners).numpy()
        bounds = [cluster_frames(distances[owners == b], self.clusters, self.method) for b in range(batch)]
        return bounds, layer

    @torch.no_grad()
    def __call__(self, backbone: FrozenEncoder, frames: torch.Tensor, *, layers: list[int], embedding: bool,
                 mask: torch.Tensor | None = None) -> SideInputs:
        rows, video, lengths = self._valid_rows(frames, mask)
        batch, clusters = frames.shape[0], self.clusters
        flat = frames.flatten(0, 1)
        device = frames.device
        bounds, _ = self._cluster(backbone, flat, rows, video, lengths)
        self.last_bounds = bounds

        # membership pairs (position in `rows`, global cluster b * K + k), sorted by position
        offsets = torch.cumsum(lengths, 0) - lengths
        positions, members = [], []
        for b, bound in enumerate(bounds):
            for k, (start, end) in enumerate(bound.tolist()):
                positions.append(torch.arange(start, end) + int(offsets[b]))
                members.append(torch.full((end - start,), b * clusters + k, dtype=torch.int64))
        positions, members = torch.cat(positions), torch.cat(members)
        order = torch.argsort(positions, stable=True)
        positions, members = positions[order], members[order]
        counts = torch.bincount(members, minlength=batch * clusters).to(torch.float32)

        # pass 3: per-cluster sums of pixels, tokens of every tapped layer and the embedding
        layers = backbone.resolve_layers(layers)
        pixel_sum = torch.zeros(batch * clusters, *frames.shape[2:], dtype=torch.float32, device=device)
        cls_sum: list[torch.Tensor] = []
        patch_sum: list[torch.Tensor] = []
        emb_sum = None
        dtypes: dict[str, torch.dtype] = {}
        need_backbone = bool(layers) or embedding
        for start, end in self._chunks(len(rows)):
            lo, hi = np.searchsorted(positions.numpy(), [start, end], side="left")
            local = (positions[lo:hi] - start).to(device)
            target = members[lo:hi].to(device)
            images = flat[rows[start:end].to(device)]
            pixel_sum.index_add_(0, target, images[local].float())
            if not need_backbone:
                continue
            taps = backbone.tap(images, layers=layers, embedding=embedding)
            if not cls_sum and layers:
                dtypes["tokens"] = taps.cls_tokens[0].dtype
                cls_sum = [torch.zeros(batch * clusters, *c.shape[1:], dtype=torch.float32, device=c.device)
                           for c in taps.cls_tokens]
                patch_sum = [torch.zeros(batch * clusters, *p.shape[1:], dtype=torch.float32, device=p.device)
                             for p in taps.patch_tokens]
            for acc, tok in zip(cls_sum, taps.cls_tokens):
                acc.index_add_(0, target.to(tok.device), tok[local.to(tok.device)].float())
            for acc, tok in zip(patch_sum, taps.patch_tokens):
                acc.index_add_(0, target.to(tok.device), tok[local.to(tok.device)].float())
            if embedding:
                e = taps.embedding
                if emb_sum is None:
                    dtypes["embedding"] = e.dtype
                    emb_sum = torch.zeros(batch * clusters, *e.shape[1:], dtype=torch.float32, device=e.device)
                emb_sum.index_add_(0, target.to(e.device), e[local.to(e.device)].float())
            del taps, images

        def mean(total: torch.Tensor) -> torch.Tensor:
            shape = (-1,) + (1,) * (total.dim() - 1)
            return total.div_(counts.to(total.device).view(shape))

        pseudo = mean(pixel_sum).to(frames.dtype).view(batch, clusters, *frames.shape[2:])
        return SideInputs(pseudo, [mean(c).to(dtypes["tokens"]) for c in cls_sum],
                          [mean(p).to(dtypes["tokens"]) for p in patch_sum], list(layers),
                          None if emb_sum is None else mean(emb_sum).to(dtypes["embedding"]), clusters)


__all__ = ["METHODS", "DISTANCES", "binarise", "hamming_distances", "l2_distances", "slope_clusters",
           "cumulative_clusters", "cluster_frames",
           "short_video_bounds", "bounds_from_cuts", "assignment", "ClusterAssembler"]
