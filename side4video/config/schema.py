"""The one configuration schema: every key, its type, its default and a one-line meaning.

The layout follows Side4Video's YAML files (``resume``, ``pretrain``, ``seed``, ``data``, ``network``,
``solver``, ``logging``) so that a config from that repository runs with only its paths changed.
Keys that did nothing there are listed in ``LEGACY_KEYS``: they are accepted with a warning.
Values are converted to their type once, when the config loads (``side4video.config.load_config``); choices
that name parts (heads, side modules, plugins, crops) come from the factories that build them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..data.dataset import DATA_FORMATS
from ..data.decoders import VIDEO_BACKENDS
from ..data.device_augment import AUGMENT_PLACEMENTS
from ..data.sampling import DENSE_WINDOWS, PROTOCOL_CHOICES
from ..data.transforms import TEST_CROP_CHOICES, THREE_CROP_MODES, TRAIN_CROPS
from ..models.assembly import check_assembler_spec
from ..models.factory import HEADS
from ..modules import SIDE_MODULES, check_side_module_spec
from ..plugins import check_plugin_spec
from ..tasks import TASKS
from .types import (
    Bool,
    Choice,
    Float,
    Int,
    ListOf,
    Literal,
    MappingOf,
    OneOf,
    Optional,
    Path,
    Raw,
    Spec,
    Str,
    Type,
    TypeMismatch,
)


@dataclass(frozen=True)
class Key:
    default: Any
    doc: str
    type: Type


@dataclass(frozen=True)
class HeadName(Type):
    """A registered head or a user's ``package.module:Class``."""

    def convert(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail()
        value = value.strip()
        if value in HEADS:
            return value
        try:
            HEADS.get(value)
        except Exception as exc:   # a ConfigError: the import failed or the class is no module
            raise TypeMismatch(str(exc), standalone=True) from None
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(HEADS.names()) + " (or package.module:Class)"


def _check_task_spec(entry: dict) -> dict:
    return {"type": entry.get("type"), **TASKS.check(entry, reserved=())}


def _fraction_range(values: list) -> bool:
    return 0 < values[0] <= values[1] <= 1


def _ordered_pair(values: list) -> bool:
    return 0 < values[0] <= values[1]


_LAYERS = OneOf((Choice(("all", "every_other")), Int(min=1), ListOf(Int())))
_POSITIVE = Int(min=1)
_NON_NEGATIVE = Int(min=0)
_PROBABILITY = Float(min=0.0, max=1.0)
_SIDE_MODULE = Spec("side module", check_side_module_spec, many=True)
_PLUGINS = Spec("training plugin", check_plugin_spec, many=True)
_ASSEMBLER = Spec("clip assembler", check_assembler_spec)
_TASK = Spec("task", _check_task_spec)

SCHEMA: dict[str, Any] = {
    "task": Key({"type": "classification"}, "what the model learns: classification (labels, cross-entropy, top-k) "
                                             "or a task of your own (package.module:Class)", _TASK),
    "resume": Key(None, "checkpoint to resume from, or 'auto' for <output>/checkpoints/last.pt", Optional(Path())),
    "pretrain": Key(None, "trainable weights (side network / head) to start from; the backbone is never read from "
                          "it; a checkpoint of the official Side4Video code works too", Optional(Path())),
    "seed": Key(1024, "base random seed; every sample's augmentation derives from (seed, epoch, index)", _NON_NEGATIVE),
    "output": Key(None, "output directory (default: exp/<dataset>/<arch>/<config name>)", Optional(Path())),
    "data": {
        "dataset": Key("custom", "dataset name; 'something'/'sth'/'ssv' in it selects the reference's "
                                 "Something-Something rules (sampling, (256, 320) scale)", Str(nonempty=True)),
        "modality": Key("RGB", "input modality", Choice(("RGB",))),
        "num_segments": Key(8, "frames per clip T", _POSITIVE),
        "seg_length": Key(1, "consecutive frames taken per segment (TSN new_length)", _POSITIVE),
        "batch_size": Key(16, "clips per process per step (before num_sample repetition)", _POSITIVE),
        "workers": Key(4, "data-loader worker processes per process", _NON_NEGATIVE),
        "num_classes": Key(None, "number of classes (required)", Optional(_POSITIVE)),
        "image_tmpl": Key("img_{:05d}.jpg", "frame file template, 1-indexed", Str(nonempty=True)),
        "train_root": Key("", "root that train_list paths are relative to", Path()),
        "train_list": Key("", "train annotation list (TSN format)", Path()),
        "val_root": Key("", "root that val_list paths are relative to", Path()),
        "val_list": Key("", "validation/test annotation list", Path()),
        "label_list": Key("", "CSV 'id,name' of class names", Path()),
        "format": Key("files", "where clips come from: files (annotation lists and a file tree) or webdataset (tar "
                               "shards written by 'side4video prep shards'; train_list/val_list are then brace-"
                               "expanded shard paths or URLs, e.g. /data/shards/shard-{000000..000009}.tar)",
                      Choice(lambda: ("files", *DATA_FORMATS.names()))),
        "shard_shuffle": Key(256, "webdataset: shuffle buffer of each loader worker, in samples (0: shard order "
                                  "only); it holds the encoded videos, so memory is about buffer x video size x "
                                  "workers", _NON_NEGATIVE),
        # text-video retrieval (task: {type: retrieval}); the reference's argument names
        "train_csv": Key("", "retrieval: the training list (MSR-VTT: MSRVTT_train.9k.csv; jsonl: the JSON-lines "
                             "file of {video, captions})", Path()),
        "val_csv": Key("", "retrieval: the evaluation list (MSR-VTT: MSRVTT_JSFUSION_test.csv, the 1k-A test; "
                           "jsonl: the JSON-lines file)", Path()),
        "data_path": Key("", "retrieval: the folder of the caption files (MSR-VTT: MSRVTT_data.json; MSVD: "
                             "*_list.txt and raw-captions.pkl; VATEX: vatex_data/; DiDeMo; ActivityNet)", Path()),
        "features_path": Key("", "retrieval: the folder of the videos or frame folders, named by video id",
                             Path()),
        "max_words": Key(32, "retrieval: caption tokens kept, start and end tokens included (at most 77)",
                         Int(min=2, max=77)),
        "max_frames": Key(12, "retrieval: frames per video", _POSITIVE),
        "slice_framepos": Key(2, "retrieval test sampling: which frames of the strided ones are kept (0 the "
                                 "first, 1 the last, 2 evenly spread)", Choice((0, 1, 2))),
        "input_size": Key(224, "crop size fed to the network (a multiple of the backbone's patch size)", Int(min=8)),
        "scale_size": Key(None, "resize before cropping: short side int or [H, W]; default: the reference's rule "
                                "((256, 320) for Something-Something, 256 otherwise, for a 224 input)",
                          Optional(OneOf((_POSITIVE, ListOf(_POSITIVE, length=2))))),
        "sampling_protocol": Key("auto", "frame-index rules: tsn (TSN/TSM), sth or kinetics (the reference's own "
                                         "datasets/sth.py, kinetics.py); auto: sth if the dataset is "
                                         "Something-Something, else kinetics, as the reference chooses",
                                 Choice(PROTOCOL_CHOICES)),
        "random_shift": Key(True, "random offsets at train time (False: the validation indices)", Bool()),
        "num_sample": Key(1, "repeated augmentation: k augmented views of the same sampled frames", _POSITIVE),
        "rand_aug": Key(False, "RandAugment, same operation on every frame of a clip", Bool()),
        "rand_aug_policy": Key("rand-m7-n4-mstd0.5-inc1", "timm RandAugment policy string", Str(nonempty=True)),
        "augment_on": Key("auto", "where training augmentation runs: workers (each loader worker augments its clips) "
                                  "or device (workers only decode, at the smallest size that holds the crop; the "
                                  "training process augments whole batches with tensor operations on its device); "
                                  "auto: device on a GPU, workers otherwise", Choice(AUGMENT_PLACEMENTS)),
        "rand_erase": Key(False, "random erasing (not supported: must stay False)", Bool()),
        "sampling": Key("segment", "frame sampling: TSN segments or a dense window", Choice(("segment", "dense"))),
        "sampling_rate": Key(8, "frame stride inside a dense window (tsn protocol)", _POSITIVE),
        "dense_range": Key(128, "frames covered by a dense window of the sth/kinetics protocols (stride range // T)",
                           _POSITIVE),
        "dense_window": Key("reference", "a dense window longer than the video: reference (wrap around, mod F: frames "
                                         "out of order and identical test clips, as the reference) or adaptive (shrink "
                                         "the window to the video: frames in order, clips differ)",
                            Choice(DENSE_WINDOWS)),
        "train_crop": Key("random_resized", "train crop", Choice(TRAIN_CROPS)),
        "crop_area": Key([0.08, 1.0], "random resized crop: range of the crop area fraction",
                         ListOf(Float(min=0.0, max=1.0), length=2, check=_fraction_range,
                                check_doc="0 < low <= high <= 1")),
        "crop_ratio": Key([0.75, 1.3333333], "random resized crop: range of aspect ratios",
                          ListOf(Float(min=0.0, min_open=True), length=2, check=_ordered_pair,
                                 check_doc="0 < low <= high")),
        "flip": Key(True, "random horizontal flip at train time", Bool()),
        "flip_pairs": Key(None, "class pairs swapped when a clip is flipped; default: the reference's "
                                "Something-Something pairs [[86, 87], [93, 94], [166, 167]] for an SS dataset, "
                                "none otherwise", Optional(ListOf(ListOf(_NON_NEGATIVE, length=2)))),
        "grayscale": Key(None, "probability of converting a training clip to grayscale; default: the reference's "
                               "0 for Something-Something, 0.2 otherwise", Optional(_PROBABILITY)),
        "mean": Key([0.48145466, 0.4578275, 0.40821073], "normalisation mean (CLIP)", ListOf(Float(), length=3)),
        "std": Key([0.26862954, 0.26130258, 0.27577711], "normalisation std (CLIP)",
                   ListOf(Float(min=0.0, min_open=True), length=3)),
        "video_backend": Key("decord", "decoder for video-file lists (torchcodec needs the system's FFmpeg "
                                       "libraries)", Choice(VIDEO_BACKENDS)),
        "max_bad_fraction": Key(0.05, "stop training if more than this fraction of an epoch's samples were "
                                      "unreadable", _PROBABILITY),
        "max_retries": Key(10, "replacement samples tried for one unreadable training sample", _NON_NEGATIVE),
        "pin_memory": Key(True, "pin host memory of batches", Bool()),
        "prefetch_factor": Key(4, "batches each loader worker prepares ahead", _POSITIVE),
        "test_crops": Key(1, "spatial crops per clip at test time", Choice(TEST_CROP_CHOICES)),
        "test_clips": Key(1, "temporal clips per video at test time", _POSITIVE),
        "three_crop": Key("reference", "3-crop test views: reference (GroupFullResSample: three input-size crops "
                                       "of the frame scaled by the scale rule) or full_height (TSM full-res: "
                                       "short side resized to the crop size)",
                          Choice(THREE_CROP_MODES)),
    },
    "network": {
        "arch": Key("ViT-B/16", "backbone: OpenAI/open_clip/EVA02 name or a path to an open_clip-style JSON config",
                    Str(nonempty=True)),
        "pretrained": Key(None, "backbone weight file; default: the conventional file in the pretrained dir; "
                                "false: random weights (tests)",
                          OneOf((Literal(False, ("false", "random")), Optional(Path())))),
        "pretrained_dir": Key(None, "where conventional backbone weight files are looked up (default: "
                                    "$SIDE4VIDEO_PRETRAINED_DIR, else clip_pretrain)", Optional(Path())),
        "quick_gelu": Key(None, "force QuickGELU on/off; default: decided from the weight file (OpenAI → on)",
                          Optional(Bool())),
        "backbone_precision": Key("fp32", "precision of the frozen backbone, independent of training (its taps are "
                                          "handed to the side network in this precision)",
                                  Choice(("fp32", "bf16", "fp16"))),
        "head": Key("side4video", "trainable part on top of the frozen backbone (or a head of your own: "
                                  "package.module:Class)", HeadName()),
        "head_args": Key({}, "more keyword arguments for the head's constructor", MappingOf(Raw())),
        "side_dim": Key(320, "side network width D (320 for B/32, B/16; 512 for L/14; 576 for EVA-E)", Int(min=8)),
        "side_layers": Key(None, "backbone layers that feed side blocks: 'all', 'every_other', k or a list; "
                                 "default all (CLIP) / every other (EVA)", Optional(_LAYERS)),
        "side_norm": Key(None, "side block normalisation: 'pre' (CLIP) or 'post' (EVA); default by backbone",
                         Optional(Choice(("pre", "post")))),
        "tap_norm": Key(None, "tap projection: 'input' (LayerNorm(W) then Linear, the reference CLIP) or 'output' "
                              "(Linear then LayerNorm(D), the reference EVA); default by backbone",
                        Optional(Choice(("input", "output")))),
        "head_norm": Key(None, "BatchNorm before the final mean pooling (the reference CLIP has it, EVA not); "
                               "default by backbone", Optional(Bool())),
        "fusion_weight": Key(0.5, "weight of the projected backbone patches when fused into the side stream",
                             _PROBABILITY),
        "temporal_module": Key("conv", "shorthand: this side module before attention in every block (conv: "
                                       "Side4Video's temporal convolution; none: no temporal module)",
                               Choice(lambda: (*SIDE_MODULES.names(), "none"))),
        "side_modules": Key([], "more side modules: [{type: gc, slot: pre_attn|post_attn|post_mlp, blocks: "
                                "all|k|[i, ...], ...arguments}], in the order listed", _SIDE_MODULE),
        "causal": Key(False, "causal side network for online recognition: every temporal part looks only at the "
                             "present and the past (stem, class-token shift, side modules in their causal form); "
                             "side4video head only", Bool()),
        "assembler": Key(None, "how frames become the side network's inputs: null (tap the sampled frames) or "
                               "{type: cluster, clusters: K, method: cumulative|slope, ...} (full-video clustering)",
                         _ASSEMBLER),
        "mlp_ratio": Key(4.0, "side block MLP hidden ratio", Float(min=0.0, min_open=True)),
        "drop_fc": Key(0.0, "dropout before the classifier", Float(min=0.0, max=1.0, max_open=True)),
        "drop_path": Key(0.0, "stochastic depth on side blocks", Float(min=0.0, max=1.0, max_open=True)),
        "grad_checkpointing": Key(False, "activation checkpointing per side block (keeps only each block's input)",
                                  Bool()),
        "recompute": Key(True, "recompute norms, GELU and the depthwise temporal conv in backward instead of "
                               "keeping their outputs (same results, less memory)", Bool()),
        "compile": Key(False, "torch.compile the side network (measure first: see BENCHMARKS.md)", Bool()),
        "sync_bn": Key(False, "BatchNorm statistics over the global batch (all processes; CPU/gloo and GPU)", Bool()),
        "transformer_layers": Key(6, "temporal_transformer head: layers", _POSITIVE),
        "n_emb": Key(None, "alias of side_dim kept for reference configs (used when side_dim is not given)",
                     Optional(Int(min=8))),
        "drop_out": Key(0.0, "reference key: dropout inside the frozen backbone, 0 in every reference config; the "
                             "backbone here is frozen in eval mode, so a non-zero value is refused", Float(min=0.0)),
        "emb_dropout": Key(0.0, "reference key: embedding dropout inside the frozen backbone, 0 in every reference "
                                "config; a non-zero value is refused (see drop_out)", Float(min=0.0)),
    },
    "solver": {
        "type": Key("cosine", "lr schedule: linear warm-up then cosine, or step decay", Choice(("cosine", "step"))),
        "epochs": Key(30, "training epochs", _POSITIVE),
        "start_epoch": Key(0, "first epoch (overridden when resuming)", _NON_NEGATIVE),
        "optim": Key("adamw", "optimizer", Choice(("adamw", "sgd"))),
        "lr": Key(1e-3, "base learning rate", Float(min=0.0, min_open=True)),
        "lr_warmup_step": Key(4, "warm-up epochs (fractional allowed)", Float(min=0.0)),
        "lr_steps": Key([], "epochs at which the step schedule multiplies lr by lr_decay", ListOf(Float(min=0.0))),
        "lr_decay": Key(0.1, "step schedule factor", Float(min=0.0, min_open=True)),
        "min_lr": Key(0.0, "floor of the cosine schedule", Float(min=0.0)),
        "weight_decay": Key(0.15, "AdamW weight decay", Float(min=0.0)),
        "weight_decay_all": Key(False, "decay every parameter (the reference) instead of skipping norms, biases, "
                                       "position embeddings", Bool()),
        "betas": Key([0.9, 0.999], "AdamW betas", ListOf(Float(min=0.0, max=1.0, max_open=True), length=2)),
        "eps": Key(1e-8, "AdamW epsilon", Float(min=0.0, min_open=True)),
        "momentum": Key(0.9, "SGD momentum", Float(min=0.0, max=1.0)),
        "lr_mult": Key({}, "per-group lr multipliers by parameter-name prefix, e.g. {head: 10} (head = the "
                           "classifier) or {blocks.0: 0.5}", MappingOf(Float(min=0.0))),
        "loss_type": Key("CE", "loss", Choice(("CE",))),
        "smoothing": Key(0.0, "label smoothing", Float(min=0.0, max=1.0, max_open=True)),
        "mixup": Key(0.0, "mixup alpha (0 disables); the mixup plugin", Float(min=0.0)),
        "cutmix": Key(0.0, "cutmix alpha (0 disables); one box per clip, the same on every frame", Float(min=0.0)),
        "mix_prob": Key(1.0, "probability of applying mixup/cutmix to a batch", _PROBABILITY),
        "mix_switch_prob": Key(0.5, "probability of cutmix instead of mixup when both are on", _PROBABILITY),
        "plugins": Key([], "training plugins, e.g. [{type: ema, decay: 0.999}, {type: svmix}]", _PLUGINS),
        "grad_accumulation_steps": Key(1, "micro-batches per optimizer step", _POSITIVE),
        "clip_gradient": Key(0.0, "gradient-norm clipping (0 disables)", Float(min=0.0)),
        "precision": Key("fp32", "training precision of the trainable part", Choice(("fp32", "bf16", "fp16"))),
        "zero_stage": Key(0, "DeepSpeed ZeRO stage", Choice((0, 1, 2))),
    },
    "logging": {
        "print_freq": Key(10, "log loss and lr every N steps (the only host-device synchronisation in the loop)",
                          _POSITIVE),
        "eval_freq": Key(1, "validate every N epochs", _POSITIVE),
        "skip_epoch": Key([], "epochs (0-based) without validation", ListOf(_NON_NEGATIVE)),
        "save_freq_steps": Key(0, "also write checkpoints/last.pt every N steps inside an epoch (0: only at epoch "
                                  "ends)", _NON_NEGATIVE),
        "progress": Key(True, "progress bar per epoch (live on a terminal, a line every progress_interval s in "
                              "log files)", Bool()),
        "progress_interval": Key(60.0, "seconds between progress lines when the output is not a terminal",
                                 Float(min=0.0, min_open=True)),
        "tensorboard": Key(True, "write TensorBoard events", Bool()),
    },
}

# Keys present in Side4Video / Text4Vis configs that have no effect there or here.
LEGACY_KEYS: dict[str, str] = {
    "network.init": "always initialised from the backbone weight file",
    "network.tm": "temporal modelling inside the backbone; the backbone is frozen here (use network.temporal_module)",
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
    "solver.evaluate": "use test.py to evaluate a checkpoint",
    "solver.clip_ratio": "lr ratio of backbone parameters; the backbone is frozen here",
    "data.dense": "use data.sampling: dense",
    "data.shot": "few-shot subsets: write the subset's annotation list instead",
    "data.randaug": "use data.rand_aug and data.rand_aug_policy",
}
