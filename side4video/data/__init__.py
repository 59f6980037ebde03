"""Video data pipeline: annotation lists, decoding, frame sampling, clip augmentation and loaders.

``data.format: webdataset`` streams clips from tar shards (``side4video.data.shards``). The toy dataset generator
lives in ``side4video.data.toy`` (not imported here, so that ``python -m side4video.data.toy`` runs cleanly).
"""
from .bad_samples import BadSampleTracker, TooManyUnreadableInputs
from .dataset import VideoDataset, create_dataset, create_sampler
from .decoders import VideoReadError, open_reader
from .device_augment import augment_views, batch_frames, resolve_augment_on
from .lists import VideoRecord, format_record, read_annotation_list, read_label_names
from .loader import ShardedEvalSampler, TrainSampler, collate_eval, collate_train, create_loader, loader_options
from .sampling import PROTOCOLS, FrameSampler, is_something_something, resolve_protocol
from .shards import ShardDataset  # registers data.format: webdataset (webdataset itself is imported on use)
from .transforms import EvalViews, TrainAugmentation, default_scale_size, eval_crop_geometry, normalize_frames

__all__ = [
    "BadSampleTracker",
    "EvalViews",
    "FrameSampler",
    "PROTOCOLS",
    "ShardDataset",
    "ShardedEvalSampler",
    "TrainAugmentation",
    "TooManyUnreadableInputs",
    "TrainSampler",
    "VideoDataset",
    "VideoReadError",
    "VideoRecord",
    "augment_views",
    "batch_frames",
    "create_dataset",
    "create_loader",
    "create_sampler",
    "collate_eval",
    "collate_train",
    "default_scale_size",
    "eval_crop_geometry",
    "format_record",
    "is_something_something",
    "loader_options",
    "normalize_frames",
    "open_reader",
    "read_annotation_list",
    "read_label_names",
    "resolve_augment_on",
    "resolve_protocol",
]
