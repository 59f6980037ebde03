"""SV-Mix: selective volume mixup (Tan, Qiu, Hao, Yao, He, Mei; arXiv 2309.09534) as a training plugin.

A *learnable* mixup (AutoMix-style): a small :class:`MixBlock` looks at the clean clip's features and decides,
per patch of every frame (spatial mode) or per frame (temporal mode), how much of the partner clip to paste
in. Spec: ``shared/reference/seed_methods.md`` §4. Config::

    solver:
      plugins: [{type: svmix}]                # defaults below; e.g. {type: svmix, ema_decay: 0.999, lr_mult: 1.0}

Conventions. ``λ`` is the weight of the sample's *own* clip, ``m`` the weight of the partner's (the MixBlock's
output): ``x̃ = (1−m)⊙x + m⊙x[perm]``, so ``mean(1−m) ≈ λ``. The constant fallback therefore uses ``m ≡ 1−λ``
(own weight λ, the spec's "mask replaced by the constant λ" read in this convention, which is the one that makes
the ratio term ``|1 − mean(m) − λ|`` and the plain-mixup initialisation agree).

Each training step (one λ, mode and permutation per batch, all from torch's global CPU RNG, which the trainer
checkpoints):

1. mode: spatial with probability ``switch_prob`` and ``λ ~ Beta(spatial_alpha, spatial_alpha)``, else temporal
   with ``λ ~ Beta(temporal_alpha, temporal_alpha)``; ``λ_k ~ Beta(mask_alpha, mask_alpha)``; two independent
   permutations ``perm`` and ``perm_k`` (spec §4 step 1).
2. online branch (:meth:`on_batch`): ``m = M(F, λ, perm)`` computed without gradient (detached); if
   ``λ ≤ fallback`` or ``λ ≥ 1 − fallback`` then ``m ≡ 1 − λ``. The trainer then runs the frozen backbone and
   the online model on the pixel-mixed clip ``x̃`` (step 2).
3. label ratio (step 3): ``s = softmax_{t,h,w}(mean_c F)``, ``λ_lab = Σ s(1−m̄) / (Σ s(1−m̄) + Σ s[perm]·m̄)``
   per sample, target ``λ_lab·ỹ + (1−λ_lab)·ỹ[perm]`` with ``ỹ`` the label-smoothed one-hot (``smoothing``, default
   ``solver.smoothing``: folded in here because ``classification_loss`` does not smooth soft targets).
4. mask-learning branch (:meth:`loss`): ``m_k = M(F, λ_k, perm_k)`` *with* gradient; ``x̃_k`` goes through the
   frozen backbone (gradient flows to its input pixels, never into its weights) and the frozen EMA copy ``f_k`` of
   the model (eval mode: dropout / drop-path off, BatchNorm on running statistics); target mixed at exactly
   ``λ_k``. Nothing but the MixBlock receives gradient from this branch: ``F`` and the clean clip carry none, the
   EMA and backbone weights have ``requires_grad=False`` (step 4).
5. loss (step 5): ``CE(f(x̃), y_lab)`` [the trainer's classification loss] ``+ mask_loss_weight·CE(f_k(x̃_k), y_k)
   + ratio_weight·max(|1 − mean(m_k) − λ_k| − ratio_margin, 0)`` (defaults 1, 0.1, 0.1).
6. the MixBlock is this plugin's trainable part: its own optimizer group with ``lr = lr_mult × solver.lr``
   (step 6); the EMA is updated after every optimizer step (decay ``ema_decay``, timm ``ModelEmaV3`` through
   :class:`EmaPlugin`, composed here, not duplicated) and **validation uses the EMA model** (step 7).

Feature source (decision). ``F`` is the frozen backbone's patch tokens of layer ``feature_layer`` (default the
last) on the *clean* clip, ``[B, T, h, w, W]`` — the spec's frozen-CLIP variant — not the EMA side network's
features. Why: (a) the frozen features need no EMA and never drift, so the mask and the saliency weights are
stable from step one (the EMA side network starts random); (b) they exist for every head (``frame_avg`` /
``temporal_transformer`` have no spatial map; the side network's internals would need hooks); (c) it costs no
more: the side network only reads backbone taps, so EMA-side features would need the same clean-clip backbone
pass plus an extra side-network pass. A LayerNorm (``feature_norm``) precedes the projections because raw CLIP
residual-stream tokens have large, outlier-dominated scales (a deviation from the spec, which has none; it keeps
the λ channel's weight 4 meaningful whatever the backbone). The saliency ``s`` uses the raw tokens, as specified.

Cost per step, in backbone passes (the plain trainer does 1 forward, no grad): **+2 forwards and +1 backward**:
the clean-clip feature pass (no grad; it stops after ``feature_layer``, so it is a partial pass when that layer
is not the last) and the mask-branch pass on ``x̃_k`` (with autograd through the frozen weights to the pixels)
plus its backward; the EMA model runs once forward and backward on ``x̃_k``. See
:attr:`SVMixPlugin.extra_backbone_passes`.

Combinations: ``ema`` next to ``svmix`` is refused (SV-Mix keeps its own EMA, which it trains against and
validates; set ``ema_decay`` instead), so is mixup/cutmix (``solver.mixup``/``solver.cutmix`` > 0 or a ``mixup``
entry: the clip would be mixed twice). Full-video clips with a frame mask are refused (padded frames would be
mixed in).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, TrainingError
from ..models import run_model
from ..tasks import TrainBatch, classification_loss
from .base import PLUGINS, PluginContext, TrainPlugin
from .ema import EmaPlugin

SPATIAL, TEMPORAL = "spatial", "temporal"


class MixBlock(nn.Module):
    """``M(F, λ, perm, mode)`` → the partner's weight ``m`` in (0, 1): ``[B, T, h, w]`` (spatial: one value per patch
    of every frame) or ``[B, T, 1, 1]`` (temporal: one value per frame).

    ``F`` is ``[B, T, h, w, C]``. A λ channel is appended (``λ−0.5`` to the sample's own features, ``−(λ−0.5)`` to
    the partner's ``F[perm]``); ``q = W_q[F; λ−0.5]``, ``k = W_q[F[perm]; −(λ−0.5)]`` (one shared projection to
    ``inter_dim``), ``v = W_v[F[perm]; −(λ−0.5)] ∈ R``; ``m = σ(softmax(q kᵀ/√d) v)``, the attention running over
    the partner's h·w patches of the same frame (spatial) or over the partner's T frames of (h, w)-averaged
    features (temporal). ``W_v`` starts with weight 0 on the features and ``value_init`` = 4 on the λ channel, bias
    0, so at initialisation ``v = 2 − 4λ`` everywhere and ``m = σ(2 − 4λ)`` exactly (the attention rows sum to 1):
    ``1 − m = σ(4λ − 2) ≈ λ`` (|σ(4λ−2) − λ| ≤ 0.078 on [0.08, 0.92], ≤ 0.12 on [0, 1]), i.e. plain mixup.
    """

    def __init__(self, in_dim: int, inter_dim: int | None = None, feature_norm: bool = True, value_init: float = 4.0):
        super().__init__()
        self.in_dim = int(in_dim)
        self.inter_dim = int(inter_dim or in_dim)
        self.norm = nn.LayerNorm(self.in_dim) if feature_norm else nn.Identity()
        self.query = nn.Linear(self.in_dim + 1, self.inter_dim)     # shared by queries and keys
        self.value = nn.Linear(self.in_dim + 1, 1)
        with torch.no_grad():
            self.value.weight.zero_()
            self.value.weight[0, -1] = value_init
            self.value.bias.zero_()

    def forward(self, features: torch.Tensor, lam: float, perm: torch.Tensor, mode: str) -> torch.Tensor:
        if mode not in (SPATIAL, TEMPORAL):
            raise ConfigError(f"MixBlock mode must be '{SPATIAL}' or '{TEMPORAL}', got {mode!r}")
        b, t, h, w, c = features.shape
        x = self.norm(features.to(self.query.weight.dtype))
        x = x.mean(dim=(2, 3)) if mode == TEMPORAL else x.reshape(b, t, h * w, c)   # [B, T, C] | [B, T, hw, C]
        shift = float(lam) - 0.5
        own = torch.cat([x, x.new_full((*x.shape[:-1], 1), shift)], dim=-1)
        partner = torch.cat([x[perm], x.new_full((*x.shape[:-1], 1), -shift)], dim=-1)
        q, k, v = self.query(own), self.query(partner), self.value(partner)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.inter_dim), dim=-1)
        m = torch.sigmoid(attn @ v).squeeze(-1)
        return m.reshape(b, t, 1, 1) if mode == TEMPORAL else m.reshape(b, t, h, w)


def smoothed_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """timm's convention: ``1 − ε + ε/C`` on the label, ``ε/C`` elsewhere (rows sum to 1)."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device, dtype=torch.float32)
    return out.scatter_(1, labels.view(-1, 1).long(), 1.0 - smoothing + off)


@PLUGINS.register("svmix")
class SVMixPlugin(TrainPlugin):
    """Selective volume mixup with a learned MixBlock, its mask-learning branch through a frozen EMA copy, and
    EMA validation (see the module docstring for every formula).

    Args:
        switch_prob: probability of the spatial (patch) mode; the temporal (frame) mode otherwise.
        spatial_alpha: λ ~ Beta(α, α) in spatial mode (spec: cutmix_alpha 1.0).
        temporal_alpha: λ ~ Beta(α, α) in temporal mode (spec: mixup_alpha 0.8).
        mask_alpha: λ_k ~ Beta(α, α) for the mask-learning branch (spec: 1.0).
        fallback: the online mask becomes the constant ``m ≡ 1 − λ`` when λ ≤ fallback or λ ≥ 1 − fallback (0.08).
        ratio_weight, ratio_margin: the ratio term ``ratio_weight·max(|1 − mean(m_k) − λ_k| − ratio_margin, 0)``.
        mask_loss_weight: weight of the mask branch's cross-entropy (spec: 1).
        smoothing: label smoothing folded into both branches' soft targets (None: ``solver.smoothing``).
        feature_layer: the backbone layer whose patch tokens feed the MixBlock (negative: from the end).
        inter_dim: the MixBlock's query/key width (None: the backbone width C, as the spec does for ViTs).
        feature_norm: LayerNorm the features before the MixBlock's projections.
        ema_decay, ema_warmup: the EMA copy ``f_k`` (timm ModelEmaV3 via :class:`EmaPlugin`; spec 0.999, no warm-up).
        lr_mult: the MixBlock's lr relative to ``solver.lr`` (its own optimizer group).
        weight_decay: the MixBlock's weight decay (None: ``solver.weight_decay``).
    """

    name = "svmix"
    lr_mult: float = 1.0
    weight_decay: float | None = None
    # per training step, on top of the trainer's one no-grad forward on the mixed clip
    extra_backbone_passes = {"forward": 2, "backward": 1}

    def __init__(self, switch_prob: float = 0.5, spatial_alpha: float = 1.0, temporal_alpha: float = 0.8,
                 mask_alpha: float = 1.0, fallback: float = 0.08, ratio_weight: float = 0.1,
                 ratio_margin: float = 0.1, mask_loss_weight: float = 1.0, smoothing: float | None = None,
                 feature_layer: int = -1, inter_dim: int | None = None, feature_norm: bool = True,
                 ema_decay: float = 0.999, ema_warmup: bool = False, lr_mult: float = 1.0,
                 weight_decay: float | None = None):
        if not 0.0 <= switch_prob <= 1.0:
            raise ConfigError(f"switch_prob must be in [0, 1], got {switch_prob}")
        for key, value in (("spatial_alpha", spatial_alpha), ("temporal_alpha", temporal_alpha),
                           ("mask_alpha", mask_alpha)):
            if not value > 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        if not 0.0 <= fallback < 0.5:
            raise ConfigError(f"fallback must be in [0, 0.5), got {fallback}")
        if smoothing is not None and not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"smoothing must be in [0, 1), got {smoothing}")
        if inter_dim is not None and inter_dim < 1:
            raise ConfigError(f"inter_dim must be >= 1, got {inter_dim}")
        if ratio_weight < 0 or ratio_margin < 0 or mask_loss_weight < 0:
            raise ConfigError("ratio_weight, ratio_margin and mask_loss_weight must be >= 0")
        if lr_mult <= 0:
            raise ConfigError(f"lr_mult must be > 0, got {lr_mult}")
        self.switch_prob, self.fallback = float(switch_prob), float(fallback)
        self.alphas = {SPATIAL: float(spatial_alpha), TEMPORAL: float(temporal_alpha)}
        self.mask_alpha = float(mask_alpha)
        self.ratio_weight, self.ratio_margin = float(ratio_weight), float(ratio_margin)
        self.mask_loss_weight = float(mask_loss_weight)
        self.smoothing_option = smoothing
        self.feature_layer, self.inter_dim, self.feature_norm = int(feature_layer), inter_dim, bool(feature_norm)
        self.lr_mult = float(lr_mult)
        self.weight_decay = weight_decay
        self.ema_plugin = EmaPlugin(decay=ema_decay, warmup=ema_warmup, validate=True)
        self.block: MixBlock | None = None

    # -- set-up ------------------------------------------------------------------------------------------------
    def setup(self, ctx: PluginContext) -> nn.Module:
        solver = getattr(ctx.cfg, "solver", None)
        self._check_combination(solver)
        self.backbone, self.assembler = ctx.backbone, ctx.assembler
        self.num_classes, self.device = int(ctx.num_classes), ctx.device
        self.smoothing = float(self.smoothing_option if self.smoothing_option is not None
                               else _get(solver, "smoothing", 0.0))
        self.precision = str(_get(solver, "precision", "fp32"))
        self.layer = ctx.backbone.resolve_layers([self.feature_layer])[0]
        self.patch_size = int(ctx.backbone.info.patch_size)
        self.ema_plugin.setup(ctx)
        self.block = MixBlock(ctx.backbone.info.width, self.inter_dim, self.feature_norm).to(ctx.device)
        return self.block

    @staticmethod
    def _check_combination(solver) -> None:
        if solver is None:
            return
        types = [str(dict(entry).get("type")) for entry in (_get(solver, "plugins", None) or [])]
        if "ema" in types:
            raise ConfigError("solver.plugins: 'svmix' keeps its own EMA model (it trains the MixBlock against it and "
                              "validates it); remove the 'ema' entry and set svmix's ema_decay instead")
        if "mixup" in types or float(_get(solver, "mixup", 0) or 0) > 0 or float(_get(solver, "cutmix", 0) or 0) > 0:
            raise ConfigError("solver.plugins: 'svmix' mixes the clips itself; set solver.mixup and solver.cutmix to "
                              "0 and remove any 'mixup' entry")

    @property
    def ema(self) -> nn.Module:
        """The frozen EMA copy ``f_k`` (validated instead of the model)."""
        return self.ema_plugin.module

    # -- pieces ------------------------------------------------------------------------------------------------
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """The clean clip's frozen patch tokens of ``feature_layer`` as ``[B, T, h, w, C]`` float32 (no grad)."""
        b, t, _, height, width = frames.shape
        tokens = self.backbone.tap(frames, layers=[self.layer], embedding=False).patch_tokens[0]
        h, w = height // self.patch_size, width // self.patch_size
        if tokens.shape[1] != h * w:
            raise TrainingError(f"svmix: {tokens.shape[1]} patch tokens per frame do not form the {h}x{w} grid of "
                                f"{height}x{width} frames with patch {self.patch_size}")
        return tokens.detach().float().reshape(b, t, h, w, tokens.shape[-1])

    def draw(self, batch_size: int) -> dict[str, Any]:
        """Mode, λ, λ_k and two permutations from torch's global (CPU) RNG, in a fixed order."""
        mode = SPATIAL if float(torch.rand(())) < self.switch_prob else TEMPORAL
        alpha = torch.tensor(self.alphas[mode])
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        alpha_k = torch.tensor(self.mask_alpha)
        lam_k = float(torch.distributions.Beta(alpha_k, alpha_k).sample())
        perm = torch.randperm(batch_size)
        perm_k = torch.randperm(batch_size)
        return {"mode": mode, "lam": lam, "lam_k": lam_k, "perm": perm.to(self.device),
                "perm_k": perm_k.to(self.device)}

    def online_mask(self, features: torch.Tensor, lam: float, perm: torch.Tensor, mode: str) -> torch.Tensor:
        """The online branch's mask (no gradient), with the constant fallback ``m ≡ 1 − λ`` near λ = 0 and 1."""
        b, t, h, w, _ = features.shape
        if lam <= self.fallback or lam >= 1.0 - self.fallback:
            shape = (b, t, 1, 1) if mode == TEMPORAL else (b, t, h, w)
            return features.new_full(shape, 1.0 - lam)
        with torch.no_grad():
            return self.block(features, lam, perm, mode).detach()

    @staticmethod
    def mix(frames: torch.Tensor, mask: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """``x̃ = (1−m)⊙x + m⊙x[perm]`` with ``m`` ``[B, T, h, w]`` nearest-upsampled to the pixels."""
        b, t, c, height, width = frames.shape
        m = mask.to(frames.dtype)
        if m.shape[-2:] != (height, width):
            m = F.interpolate(m.reshape(b * t, 1, *m.shape[-2:]), size=(height, width), mode="nearest")
        m = m.reshape(b, t, 1, height, width)
        return (1.0 - m) * frames + m * frames[perm]

    @staticmethod
    def label_ratio(features: torch.Tensor, mask: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """Saliency-corrected own-label weight per sample: ``Σ s(1−m̄) / (Σ s(1−m̄) + Σ s[perm]·m̄)``, with
        ``s = softmax over (t, h, w)`` of the channel mean of the raw features and ``m̄`` the mask on the (h, w)
        grid of every frame."""
        b, t, h, w, _ = features.shape
        saliency = torch.softmax(features.float().mean(-1).reshape(b, -1), dim=1).reshape(b, t, h, w)
        m = mask.float().expand(b, t, h, w)
        own = (saliency * (1.0 - m)).sum(dim=(1, 2, 3))
        partner = (saliency[perm] * m).sum(dim=(1, 2, 3))
        return own / (own + partner).clamp_min(1e-12)

    def mixed_targets(self, labels: torch.Tensor, ratio: torch.Tensor | float, perm: torch.Tensor) -> torch.Tensor:
        """``r·ỹ + (1−r)·ỹ[perm]`` with label-smoothed one-hots ``ỹ`` (rows sum to 1)."""
        y = smoothed_one_hot(labels, self.num_classes, self.smoothing)
        r = ratio.view(-1, 1).float() if torch.is_tensor(ratio) else float(ratio)
        return r * y + (1.0 - r) * y[perm]

    def _autocast(self):
        enabled = self.precision in ("bf16", "fp16")
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype, enabled=enabled)

    # -- hooks -------------------------------------------------------------------------------------------------
    def on_batch(self, batch: TrainBatch) -> TrainBatch:
        if batch.mask is not None and not bool(batch.mask.all()):
            raise ConfigError("svmix cannot mix full-video clips with padded frames (data.full_video); "
                              "train without svmix or with fixed-length clips")
        frames = batch.frames
        features = self.features(frames)
        draw = self.draw(frames.shape[0])
        mask = self.online_mask(features, draw["lam"], draw["perm"], draw["mode"])
        ratio = self.label_ratio(features, mask, draw["perm"])
        batch.extra["svmix"] = dict(draw, frames=frames, features=features, labels=batch.labels, mask=mask,
                                    label_ratio=ratio)
        batch.frames = self.mix(frames, mask, draw["perm"])
        batch.targets = self.mixed_targets(batch.labels, ratio, draw["perm"])
        return batch

    def mask_branch(self, state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The mask-learning loss terms for one batch's stash (gradient only into the MixBlock)."""
        lam_k, perm_k = state["lam_k"], state["perm_k"]
        m_k = self.block(state["features"], lam_k, perm_k, state["mode"])
        mixed = self.mix(state["frames"], m_k, perm_k)
        with self._autocast():
            logits = run_model_with_input_grad(self.backbone, self.ema, mixed, self.assembler)
        if not logits.requires_grad:
            raise TrainingError("svmix: the mask-learning loss does not reach the MixBlock (the clip assembler "
                                f"{type(self.assembler).__name__} or the backbone cuts the gradient to the pixels)")
        targets = self.mixed_targets(state["labels"], lam_k, perm_k)
        ce = classification_loss(logits, targets)
        ratio = torch.clamp((1.0 - m_k.mean() - lam_k).abs() - self.ratio_margin, min=0.0)
        return {"svmix_mask_ce": self.mask_loss_weight * ce, "svmix_ratio": self.ratio_weight * ratio}

    def loss(self, logits: torch.Tensor, inputs, batch: TrainBatch, model: nn.Module) -> dict[str, torch.Tensor]:
        state = batch.extra.pop("svmix", None)
        return {} if state is None else self.mask_branch(state)

    def after_step(self, step: int, model: nn.Module) -> None:
        self.ema_plugin.after_step(step, model)

    def eval_model(self, model: nn.Module) -> nn.Module:
        return self.ema

    def state_dict(self) -> dict[str, Any]:
        return {}   # the EMA is the validated model: the checkpoint holds it once, as its eval_model

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "ema" in state:   # checkpoints written before eval_model carried the validated EMA
            self.ema_plugin.load_state_dict(state["ema"])


def run_model_with_input_grad(backbone, model: nn.Module, frames: torch.Tensor, assembler=None) -> torch.Tensor:
    """``run_model`` with autograd kept through the frozen backbone to ``frames`` (its weights stay frozen)."""
    return run_model(backbone.with_input_grad(), model, frames, assembler)


def _get(section, key: str, default: Any) -> Any:
    if section is None:
        return default
    try:
        value = section[key]
    except (KeyError, TypeError, AttributeError):
        value = getattr(section, key, default)
    return default if value is None and default is not None else value


__all__ = ["MixBlock", "SVMixPlugin", "smoothed_one_hot", "run_model_with_input_grad"]
