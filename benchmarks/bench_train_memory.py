"""Training memory of a side network against fine-tuning the backbone, measured without a GPU.

What a training step must keep for backward is the activations autograd saves, plus parameters, gradients and
optimizer state of what trains. The activations are counted exactly with ``saved_tensors_hooks`` (unique
storages), so the comparison is deterministic and device-independent; peak GPU memory adds the allocator's
overhead and the frozen backbone's weights on top (see BENCHMARKS.md).

    python benchmarks/bench_train_memory.py [--arch ViT-B/16] [--batch 2] [--frames 8]
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from side4video.backbones import create_backbone
from side4video.models import count_parameters, create_model


class SavedActivations:
    """Bytes of the distinct tensor storages autograd saves during a forward pass."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


class FineTuned(nn.Module):
    """The whole image tower trains (frame-averaged embeddings → linear classifier): the memory baseline."""

    def __init__(self, visual: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.visual, self.fc = visual, nn.Linear(embed_dim, num_classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        return self.fc(self.visual(frames.flatten(0, 1)).reshape(b, t, -1).mean(1))


def measure(name: str, step, trainable: int) -> dict:
    meter = SavedActivations()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, lambda t: t):
        loss = step()
    loss.backward()
    elapsed = time.perf_counter() - start
    # AdamW keeps two fp32 moments; parameters and gradients are fp32 too.
    states = trainable * 4 * 4
    return {"method": name, "trainable": trainable, "activations": meter.bytes, "param_grad_adam": states,
            "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B/16")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--classes", type=int, default=174)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = create_backbone(args.arch, pretrained=False)
    info = encoder.info
    frames = torch.randn(args.batch, args.frames, 3, info.image_size, info.image_size)
    labels = torch.randint(0, args.classes, (args.batch,))
    rows = []
    for name, head, options in [("Side4Video side network (D=320)", "side4video", dict(side_dim=320)),
                                ("Side4Video light (D=128)", "side4video", dict(side_dim=128)),
                                ("frame-averaging probe", "frame_avg", {})]:
        model = create_model(head, info, args.classes, num_frames=args.frames, **options)

        def step(model=model):
            taps = encoder.tap(frames, layers=model.backbone_layers, embedding=model.needs_embedding)
            return F.cross_entropy(model(frames, taps.tokens, taps.embedding), labels)
        rows.append(measure(name, step, count_parameters(model)))
    visual = encoder.model.visual
    visual.requires_grad_(True)
    tuned = FineTuned(visual, info.embed_dim, args.classes).train()
    rows.append(measure("full fine-tuning (image tower)", lambda: F.cross_entropy(tuned(frames), labels),
                        count_parameters(tuned)))
    full = rows[-1]["activations"]
    print(f"{args.arch}, {args.frames} frames x {info.image_size}px, batch {args.batch}, fp32, CPU "
          f"(activation bytes scale linearly with the batch)")
    print("| method | trainable params | saved activations | params+grads+AdamW | activations vs fine-tuning | fwd+bwd s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['trainable'] / 1e6:.2f} M | {row['activations'] / 2 ** 20:.0f} MiB | "
              f"{row['param_grad_adam'] / 2 ** 20:.0f} MiB | {row['activations'] / full:.2f}x | {row['seconds']:.1f} |")


if __name__ == "__main__":
    main()
