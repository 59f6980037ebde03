"""The one configuration schema: every key, its default and a one-line meaning.

The layout follows Side4Video's YAML files (``resume``, ``pretrain``, ``seed``, ``data``, ``network``,
``solver``, ``logging``) so that a config from that repository runs with only its paths changed.
Keys that did nothing there are listed in ``LEGACY_KEYS``: they are accepted with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    default: Any
    doc: str
    choices: tuple | None = None


SCHEMA: dict[str, Any] = {
    "resume": Key(None, "checkpoint to resume from, or 'auto' for <output>/checkpoints/last.pt"),
    "pretrain": Key(None, "trainable weights (side network / head) to start from; the backbone is never read from it"),
    "seed": Key(1024, "base random seed; every sample's augmentation derives from (seed, epoch, index)"),
    "output": Key(None, "output directory (default: exp/<dataset>/<arch>/<config name>)"),
    "data": {
        "dataset": Key("custom", "dataset name; 'something'/'sth' in it selects the (256, 320) scale like the reference"),
        "modality": Key("RGB", "input modality", ("RGB",)),
        "num_segments": Key(8, "frames per clip T"),
        "seg_length": Key(1, "consecutive frames taken per segment (TSN new_length)"),
        "batch_size": Key(16, "clips per process per step (before num_sample repetition)"),
        "workers": Key(4, "data-loader worker processes per process"),
        "num_classes": Key(None, "number of classes (required)"),
        "image_tmpl": Key("img_{:05d}.jpg", "frame file template, 1-indexed"),
        "train_root": Key("", "root that train_list paths are relative to"),
        "train_list": Key("", "train annotation list (TSN format)"),
        "val_root": Key("", "root that val_list paths are relative to"),
        "val_list": Key("", "validation/test annotation list"),
        "label_list": Key("", "CSV 'id,name' of class names"),
        "input_size": Key(224, "crop size fed to the network"),
        "scale_size": Key(None, "resize before cropping: short side int or [H, W]; default 256/224*input_size, (256, 320)-like for SS"),
        "random_shift": Key(True, "random offset inside each segment at train time (False: segment centre)"),
        "num_sample": Key(1, "repeated augmentation: k augmented views of the same sampled frames"),
        "rand_aug": Key(False, "RandAugment, same operation on every frame of a clip"),
        "rand_aug_policy": Key("rand-m7-n4-mstd0.5-inc1", "timm RandAugment policy string"),
        "rand_erase": Key(False, "random erasing (not supported: must stay False)"),
        "sampling": Key("segment", "frame sampling: TSN segments or a dense window", ("segment", "dense")),
        "sampling_rate": Key(8, "frame stride inside a dense window"),
        "train_crop": Key("random_resized", "train crop", ("random_resized", "multiscale", "center")),
        "crop_area": Key([0.08, 1.0], "random resized crop: range of the crop area fraction"),
        "crop_ratio": Key([0.75, 1.3333333], "random resized crop: range of aspect ratios"),
        "flip": Key(True, "random horizontal flip at train time"),
        "flip_pairs": Key([], "class pairs swapped when a clip is flipped, e.g. [[86, 87], [93, 94], [166, 167]] for SSv2"),
        "grayscale": Key(0.0, "probability of converting a training clip to grayscale"),
        "mean": Key([0.48145466, 0.4578275, 0.40821073], "normalisation mean (CLIP)"),
        "std": Key([0.26862954, 0.26130258, 0.27577711], "normalisation std (CLIP)"),
        "video_backend": Key("decord", "decoder for video-file lists", ("decord", "pyav")),
        "max_bad_fraction": Key(0.05, "stop training if more than this fraction of an epoch's samples were unreadable"),
        "max_retries": Key(10, "replacement samples tried for one unreadable training sample"),
        "pin_memory": Key(True, "pin host memory of batches"),
        "test_crops": Key(1, "spatial crops per clip at test time", (1, 3, 5, 10)),
        "test_clips": Key(1, "temporal clips per video at test time"),
    },
    "network": {
        "arch": Key("ViT-B/16", "backbone: OpenAI/open_clip/EVA02 name or a path to an open_clip-style JSON config"),
        "pretrained": Key(None, "backbone weight file; default: the conventional file in clip_pretrain/; false: random (tests)"),
        "pretrained_dir": Key("clip_pretrain", "where conventional backbone weight files are looked up"),
        "quick_gelu": Key(None, "force QuickGELU on/off; default: decided from the weight file (OpenAI → on)"),
        "backbone_precision": Key("fp32", "precision of the frozen backbone, independent of training", ("fp32", "bf16", "fp16")),
        "head": Key("side4video", "trainable part on top of the frozen backbone",
                    ("side4video", "frame_avg", "temporal_transformer")),
        "side_dim": Key(320, "side network width D (320 for B/32, B/16; 512 for L/14)"),
        "side_layers": Key(None, "backbone layers that feed side blocks: 'all', 'every_other' or a list; default all (CLIP) / every other (EVA)"),
        "side_norm": Key(None, "side block normalisation: 'pre' (CLIP) or 'post' (EVA); default by backbone"),
        "fusion_weight": Key(0.5, "weight of the projected backbone patches when fused into the side stream"),
        "temporal_module": Key("conv", "temporal mixer inside each side block", ("conv", "tsm", "none")),
        "mlp_ratio": Key(4.0, "side block MLP hidden ratio"),
        "drop_fc": Key(0.0, "dropout before the classifier"),
        "drop_path": Key(0.0, "stochastic depth on side blocks"),
        "grad_checkpointing": Key(False, "activation checkpointing per side block"),
        "sync_bn": Key(False, "BatchNorm statistics over the global batch (all processes; works on CPU/gloo and GPU)"),
        "transformer_layers": Key(6, "temporal_transformer head: layers"),
        "n_emb": Key(None, "alias of side_dim kept for reference configs"),
    },
    "solver": {
        "type": Key("cosine", "lr schedule: linear warm-up then cosine, or step decay", ("cosine", "step")),
        "epochs": Key(30, "training epochs"),
        "start_epoch": Key(0, "first epoch (overridden when resuming)"),
        "optim": Key("adamw", "optimizer", ("adamw", "sgd")),
        "lr": Key(1e-3, "base learning rate"),
        "lr_warmup_step": Key(4, "warm-up epochs (fractional allowed)"),
        "lr_steps": Key([], "epochs at which the step schedule multiplies lr by lr_decay"),
        "lr_decay": Key(0.1, "step schedule factor"),
        "min_lr": Key(0.0, "floor of the cosine schedule"),
        "weight_decay": Key(0.15, "AdamW weight decay"),
        "weight_decay_all": Key(False, "decay every parameter (the reference) instead of skipping norms, biases, position embeddings"),
        "betas": Key([0.9, 0.999], "AdamW betas"),
        "eps": Key(1e-8, "AdamW epsilon"),
        "momentum": Key(0.9, "SGD momentum"),
        "lr_mult": Key({}, "per-group lr multipliers by parameter-name prefix, e.g. {head: 10}"),
        "loss_type": Key("CE", "loss", ("CE",)),
        "smoothing": Key(0.0, "label smoothing"),
        "mixup": Key(0.0, "mixup alpha (0 disables)"),
        "cutmix": Key(0.0, "cutmix alpha (0 disables)"),
        "mix_prob": Key(1.0, "probability of applying mixup/cutmix to a batch"),
        "mix_switch_prob": Key(0.5, "probability of cutmix instead of mixup when both are on"),
        "grad_accumulation_steps": Key(1, "micro-batches per optimizer step"),
        "clip_gradient": Key(0.0, "gradient-norm clipping (0 disables)"),
        "precision": Key("fp32", "training precision of the trainable part", ("fp32", "bf16", "fp16")),
        "zero_stage": Key(0, "DeepSpeed ZeRO stage", (0, 1, 2)),
        "evaluate": Key(False, "only evaluate (use test.py instead)"),
        "clip_ratio": Key(1, "lr ratio for backbone parameters; the backbone is frozen here, so it has no effect"),
    },
    "logging": {
        "print_freq": Key(10, "log a line every N steps"),
        "eval_freq": Key(1, "validate every N epochs"),
        "skip_epoch": Key([], "epochs (0-based) without validation"),
        "save_freq_steps": Key(0, "also write checkpoints/last.pt every N steps inside an epoch (0: only at epoch ends)"),
        "progress": Key(True, "progress bar per epoch"),
        "tensorboard": Key(True, "write TensorBoard events"),
    },
}

# Keys present in Side4Video / Text4Vis configs that have no effect there or here.
LEGACY_KEYS: dict[str, str] = {
    "network.init": "always initialised from the backbone weight file",
    "network.tm": "temporal modelling inside the backbone; the backbone is frozen here (use network.temporal_module)",
    "network.drop_out": "unused by the reference recognition model",
    "network.emb_dropout": "unused by the reference recognition model",
    "network.type": "the model type is chosen by network.head",
    "network.sim_header": "the reference bypasses it for recognition; use network.head",
    "network.joint_st": "unused by the reference",
    "network.fix_clip": "the backbone is always frozen",
    "network.my_fix_clip": "the backbone is always frozen",
    "network.fix_text": "no text tower is trained",
    "network.fix_video": "the backbone is always frozen",
    "network.drop": "unused by the reference",
    "solver.epoch_offset": "unused by the reference",
    "solver.layer_decay": "no layer-wise decay: the backbone is frozen",
}
