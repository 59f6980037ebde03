"""Baselines on frozen frame embeddings, for comparisons on the same data and backbone.

Both read only the backbone's final embedding per frame (``embedding`` ``[B*T, E]``), never its tokens.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones.frozen import BackboneInfo
from ..modules.norm import TokenBatchNorm
from .inputs import SideInputs


class FrameAverageProbe(nn.Module):
    """TSN-style linear probe: average the frozen per-frame embeddings over time, standardise, classify.

    Frame order is invisible to it, so it cannot solve a task that needs time.
    """

    needs_embedding = True
    backbone_layers: list[int] = []

    def __init__(self, backbone: BackboneInfo, num_classes: int, *, drop_fc: float = 0.0, sync_bn: bool = False):
        super().__init__()
        # feature standardisation, as in linear probing
        self.norm = TokenBatchNorm(backbone.embed_dim, affine=False, sync=sync_bn)
        self.dropout = nn.Dropout(drop_fc)
        self.fc = nn.Linear(backbone.embed_dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, inputs: SideInputs) -> torch.Tensor:
        embedding = _embedding(inputs, self)
        return self.norm(embedding.to(self.fc.weight.dtype).reshape(inputs.batch_size, -1, embedding.shape[-1])
                         .mean(dim=1))

    def forward(self, inputs: SideInputs) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(inputs)))


class TemporalTransformerHead(nn.Module):
    """Text4Vis "Transf" video header: frame embeddings + frame position embeddings → transformer, residual,
    mean over time → linear classifier."""

    needs_embedding = True
    backbone_layers: list[int] = []

    def __init__(self, backbone: BackboneInfo, num_classes: int, *, num_frames: int = 8, layers: int = 6,
                 drop_fc: float = 0.0, sync_bn: bool = False):
        super().__init__()
        width = backbone.embed_dim
        heads = max(width // 64, 1)
        self.frame_pos = nn.Parameter(torch.empty(num_frames, width).normal_(std=0.01))
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = TokenBatchNorm(width, affine=False, sync=sync_bn)
        self.dropout = nn.Dropout(drop_fc)
        self.fc = nn.Linear(width, num_classes)
        nn.init.normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, inputs: SideInputs) -> torch.Tensor:
        embedding = _embedding(inputs, self)
        x = embedding.to(self.fc.weight.dtype).reshape(inputs.batch_size, -1, embedding.shape[-1])
        t = x.shape[1]
        if t > self.frame_pos.shape[0]:
            raise ValueError(f"clip has {t} frames; the head was built for at most {self.frame_pos.shape[0]}")
        x = x + self.transformer(x + self.frame_pos[:t])
        return self.norm(x.mean(dim=1))

    def forward(self, inputs: SideInputs) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(inputs)))


def _embedding(inputs: SideInputs, model: nn.Module) -> torch.Tensor:
    if inputs.embedding is None:
        raise ValueError(f"{type(model).__name__} needs the backbone's frame embeddings (SideInputs.embedding)")
    return inputs.embedding
