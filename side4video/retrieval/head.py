"""The retrieval form of the Side4Video side network, and the frozen image tower's own head for class tokens.

Side4Video's retrieval video encoder (its ``Retrieval/modules/module_clip.py``) keeps CLIP's per-frame embedding and
adds what the side network learned to each frame's class token before CLIP's own head:

    s      = side network over the frozen layers' tokens        [B*T, N, D]   (retrieval side block, see below)
    f_t    = mean over the h·w patches of BN(s), per frame       [B, T, D]
    e_t    = proj(LN_post(cls_t^(L) + W_side · f_t))              [B, T, E]    W_side: D → W, zero at initialisation

with ``cls_t^(L)`` the frozen last layer's class token of frame t and ``LN_post``/``proj`` the image tower's own
(frozen) final norm and projection. As ``W_side`` starts at zero, an untrained model gives exactly frozen CLIP's
image embedding of every frame.

The side blocks are the recognition blocks with one difference: the side attention's position embedding has a row
for the (time-shifted) class token as well, added before the attention (``SideNetwork(cls_pos_embed=True)``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..backbones.frozen import BackboneInfo, FrozenEncoder, LayerSpec
from ..errors import ConfigError
from ..models.inputs import SideInputs
from ..models.side_network import SideNetwork

__all__ = ["RetrievalSideNetwork", "ClassTokenHead", "FrameTransformer"]


class RetrievalSideNetwork(SideNetwork):
    """The side network of Side4Video's retrieval model: per-frame residuals for the frozen class tokens.

    ``forward(inputs: SideInputs)`` → ``[B, T, W]`` (W: the backbone width): the side stream after the last block
    and the head BatchNorm, averaged over each frame's patches, through the zero-initialised ``side_proj``
    (``Linear(D → W)`` without bias, as the reference's ``side_proj`` matrix). No classifier.

    Defaults follow the reference's retrieval model: every backbone layer tapped (CLIP), the temporal convolution
    module, the class-token position row (``cls_pos_embed``), BatchNorm before the pooling. Other options are
    :class:`~side4video.models.SideNetwork`'s.
    """

    def __init__(self, backbone: BackboneInfo, *, side_dim: int = 320, layers: LayerSpec = None,
                 norm: str | None = None, tap_norm: str | None = None, head_norm: bool = True,
                 fusion_weight: float = 0.5, temporal_module: str | None = "conv",
                 side_modules: Sequence[Mapping[str, Any]] = (), mlp_ratio: float = 4.0,
                 num_heads: int | None = None, drop_path: float = 0.0, grad_checkpointing: bool = False,
                 recompute: bool = True, sync_bn: bool = False, cls_pos_embed: bool = True):
        super().__init__(backbone, 1, side_dim=side_dim, layers=layers, norm=norm, tap_norm=tap_norm,
                         head_norm=head_norm, fusion_weight=fusion_weight, temporal_module=temporal_module,
                         side_modules=side_modules, mlp_ratio=mlp_ratio, num_heads=num_heads, drop_path=drop_path,
                         grad_checkpointing=grad_checkpointing, recompute=recompute, sync_bn=sync_bn,
                         cls_pos_embed=cls_pos_embed)
        # retrieval has no classes: the recognition classifier is replaced (no parameters left behind in the
        # optimizer or the checkpoint)
        self.fc = nn.Identity()
        self.side_proj = nn.Linear(side_dim, backbone.width, bias=False)
        # zero: the untrained model is frozen CLIP exactly, and training starts from CLIP's retrieval quality
        nn.init.zeros_(self.side_proj.weight)

    def forward(self, inputs: SideInputs) -> torch.Tensor:
        """``SideInputs`` of ``B`` clips of ``T`` frames → class-token residuals ``[B, T, W]``."""
        return self.side_proj(self.frame_features(inputs))


class ClassTokenHead:
    """The frozen image tower's own head applied to class tokens: ``[..., W]`` → embeddings ``[..., E]``.

    open_clip ViT: ``ln_post`` then ``proj`` (the tower must pool its class token: no attentional pooler, pool
    type ``tok``); timm EVA trunk: the trunk's final norm, its token-pooling head, then open_clip's projection.
    With the tower's own inputs this is exactly the tower's image embedding (a test checks it).

    Not an ``nn.Module`` on purpose: it only refers to the frozen backbone's modules, which must stay out of the
    trainable model's parameters and checkpoints. It runs in the backbone's precision (as the reference, whose
    CLIP head runs in fp16) with autocast off, returns fp32, and passes gradients to its input only.
    """

    def __init__(self, backbone: FrozenEncoder):
        self.backbone = backbone
        visual = backbone.model.visual
        if hasattr(visual, "trunk"):
            trunk = visual.trunk
            if getattr(trunk, "attn_pool", None) is not None or getattr(trunk, "global_pool", "token") != "token":
                raise ConfigError(f"{backbone.info.arch}: the retrieval head needs a tower that embeds its class "
                                  f"token (timm global_pool 'token', got {getattr(trunk, 'global_pool', None)!r})")
        elif getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise ConfigError(f"{backbone.info.arch}: the retrieval head needs a tower that embeds its class token "
                              f"(pool_type 'tok', no attentional pooler)")

    def __call__(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        """``[..., W]`` class tokens → ``[..., E]`` embeddings."""
        visual = self.backbone.model.visual
        lead = cls_tokens.shape[:-1]
        x = cls_tokens.reshape(-1, cls_tokens.shape[-1]).to(self.backbone.dtype)
        with torch.autocast(x.device.type, enabled=False):
            if hasattr(visual, "trunk"):
                trunk = visual.trunk
                # timm's public head path on one-token sequences: final norm, token pooling, fc_norm, head
                x = visual.head(trunk.forward_head(trunk.norm(x.unsqueeze(1))))
            else:
                x = visual.ln_post(x)
                if visual.proj is not None:
                    x = x @ visual.proj
        return x.float().reshape(*lead, -1)


class FrameTransformer(nn.Module):
    """CLIP4Clip's ``seqTransf`` baseline for retrieval: a transformer over the frozen frame embeddings.

    ``forward(frames [B, T, E]) -> [B, T, E]``: ``x + proj(transformer(x + pos))`` with the output projection
    zero-initialised, so an untrained head gives frozen CLIP's frame embeddings (as the side network does). It sees
    only the final embeddings of the frames, never their tokens: the comparison of the toy table (BENCHMARKS.md).
    """

    def __init__(self, embed_dim: int, max_frames: int = 32, layers: int = 2, heads: int | None = None):
        super().__init__()
        heads = heads or max(embed_dim // 64, 1)
        self.frame_pos = nn.Parameter(torch.empty(max_frames, embed_dim).normal_(std=0.01))
        layer = nn.TransformerEncoderLayer(embed_dim, heads, dim_feedforward=4 * embed_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(embed_dim, embed_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        t = frames.shape[1]
        if t > self.frame_pos.shape[0]:
            raise ValueError(f"clip has {t} frames; the head was built for at most {self.frame_pos.shape[0]}")
        return frames + self.out(self.transformer(frames + self.frame_pos[:t]))
