"""Augmentation on the training device (data.augment_on: device): timm's RandAugment operations as batched tensor
operations, the same views as the workers' path, decoding at the scaled size, and a training run equal to the
workers' placement."""
import json
import random

import numpy as np
import pytest
import timm.data.auto_augment as timm_aa
import torch
from PIL import Image

from side4video.data import collate_train, create_dataset, create_loader
from side4video.data.decoders import DecordReader, EncodedFramesReader, FrameFolderReader, PyAVReader
from side4video.data.device_augment import augment_views, batch_frames, resolve_augment_on
from side4video.data.full_video import FullVideoSampler
from side4video.data.rand_augment import SUPPORTED, ClipRandAugment, RandAugmentOp, apply_op, apply_rand_augment
from side4video.data.toy import write_frame_folder, write_video
from side4video.errors import ConfigError
from tests.support import PNG_TMPL, override, write_list

FILL = (122, 116, 104)


def natural_frame(height: int, width: int, seed: int) -> torch.Tensor:
    """uint8 [3, H, W]: a smooth colour field, noise and a hard-edged block (flat areas, gradients and edges)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 5, 7)))
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]
    frame = (smooth + torch.from_numpy(rng.normal(0, 8, (3, height, width)))).clamp(0, 255).to(torch.uint8)
    frame[:, height // 3: height // 2, width // 3: width // 2] = 200
    return frame


def timm_op(frame: torch.Tensor, name: str, value: float | None) -> np.ndarray:
    """timm's own PIL operation ``name`` (as RandAugment calls it: bicubic, fill colour) on one frame."""
    image = Image.fromarray(frame.permute(1, 2, 0).numpy())
    kwargs = dict(fillcolor=FILL, resample=Image.BICUBIC)
    function = getattr(timm_aa, name)
    return np.asarray(function(image, **kwargs) if value is None else function(image, value, **kwargs))


# Tolerances, stated per operation (uint8 levels): the look-up and blend operations compute what PIL computes in
# the same precision (exact); the geometric ones use PIL's a = -1 cubic and its truncation in float32 where PIL
# works in float64, so a value can land one level lower.
EXACT = {"auto_contrast": [None], "equalize": [None], "invert": [None], "posterize": [1, 2, 4, 8],
         "solarize": [0, 100, 200, 256], "solarize_add": [0, 30, 110], "color": [0.1, 0.55, 1.0, 1.9],
         "contrast": [0.1, 0.6, 1.9], "brightness": [0.1, 0.7, 1.9], "sharpness": [0.1, 0.5, 1.9]}
GEOMETRIC = {"rotate": [-29.0, 12.3, 0.0, 3.0], "shear_x": [-0.3, 0.21], "shear_y": [0.25, -0.1],
             "translate_x_rel": [0.45, -0.2, 0.1], "translate_y_rel": [-0.4, 0.13]}


def test_every_operation_of_the_policies_has_a_tensor_version():
    names = {op.aug_fn.__name__ for policy in ("rand-m9-n2-mstd0.5", "rand-m7-n4-mstd0.5-inc1")
             for op in timm_aa.rand_augment_transform(policy, {}).ops}
    assert names <= SUPPORTED
    assert set(EXACT) | set(GEOMETRIC) == SUPPORTED


@pytest.mark.parametrize("shape", [(96, 128), (37, 53)])
@pytest.mark.parametrize("name,values", [*EXACT.items(), *GEOMETRIC.items()])
def test_each_operation_matches_timms_pil_operation(name, values, shape):
    frames = torch.stack([natural_frame(*shape, seed) for seed in (0, 1)])       # a clip of two different frames
    for value in values:
        out = apply_op(frames[None], name, torch.tensor([0.0 if value is None else float(value)]), FILL)[0]
        for frame, got in zip(frames, out):
            expected = timm_op(frame, name, value).astype(int)
            difference = np.abs(got.permute(1, 2, 0).numpy().astype(int) - expected)
            if name in EXACT:
                assert difference.max() == 0, (name, value)
            else:
                assert difference.max() <= 1 and (difference == 0).mean() >= 0.97, (name, value, difference.mean())


def test_each_clip_gets_its_own_argument_in_one_call():
    clips = torch.stack([natural_frame(40, 48, seed) for seed in range(3)])[:, None]      # [3, 1, 3, H, W]
    values = torch.tensor([-20.0, 0.0, 15.0])
    together = apply_op(clips, "rotate", values, FILL)
    for clip, value, got in zip(clips, values, together):
        assert torch.equal(got, apply_op(clip[None], "rotate", value[None], FILL)[0])
    assert torch.equal(together[1], clips[1])      # 0 degrees: the frame as it was (cubic weights (0, 1, 0, 0))


def test_recorded_operations_are_exactly_what_timm_runs():
    """draw(seed) lets timm's RandAugment make its draws and records the calls: running the recorded calls with timm's
    PIL functions gives exactly the clip that ClipRandAugment (timm itself, per frame) gives for the same seed."""
    augment = ClipRandAugment("rand-m7-n4-mstd0.5-inc1", translate_const=20, mean=(0.48, 0.46, 0.41))
    clip = torch.stack([natural_frame(40, 56, seed) for seed in (3, 4)])
    kinds = set()
    for seed in range(40):
        ops = augment.draw(seed)
        assert all(isinstance(op, RandAugmentOp) for op in ops) and len(ops) <= 4
        kinds.update(op.name for op in ops)
        expected = augment(clip, seed)
        for frame, want in zip(clip, expected):
            image = Image.fromarray(frame.permute(1, 2, 0).numpy())
            for op in ops:
                image = getattr(timm_aa, op.name)(image, *op.args, fillcolor=augment.fill, resample=Image.BICUBIC)
            assert np.array_equal(np.asarray(image), want.permute(1, 2, 0).numpy()), (seed, ops)
    assert len(kinds) >= 12      # the seeds cover most of the policy's operations


def test_drawing_operations_leaves_the_callers_global_rngs_alone():
    augment = ClipRandAugment("rand-m9-n4-mstd0.5-inc1", translate_const=20, mean=(0.5, 0.5, 0.5))
    random.seed(5)
    np.random.seed(5)
    before = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    first = augment.draw(11)
    assert (random.random(), np.random.rand()) == before
    assert augment.draw(11) == first and augment.draw(12) != first


def test_batched_rand_augment_applies_each_clips_list_in_order():
    clips = torch.stack([torch.stack([natural_frame(32, 40, 2 * i), natural_frame(32, 40, 2 * i + 1)])
                         for i in range(3)])
    ops = [[RandAugmentOp("rotate", (10.0,)), RandAugmentOp("invert", ())],
           [RandAugmentOp("invert", ()), RandAugmentOp("posterize", (2.0,)), RandAugmentOp("color", (0.3,))],
           []]
    out = apply_rand_augment(clips, ops, FILL)
    for clip, clip_ops, got in zip(clips, ops, out):
        want = clip[None]
        for op in clip_ops:
            want = apply_op(want, op.name, torch.tensor([op.args[0] if op.args else 0.0]), FILL)
        assert torch.equal(got, want[0])
    assert torch.equal(out[2], clips[2])


# -- the dataset: the same views in either placement -----------------------------------------------------------------
@pytest.fixture(scope="module")
def textured_frames(tmp_path_factory):
    """Four PNG frame folders of 20 textured 48x64 frames (RandAugment needs texture to show differences)."""
    root = tmp_path_factory.mktemp("textured")
    lines = []
    for i in range(4):
        frames = np.stack([natural_frame(48, 64, 100 * i + t).permute(1, 2, 0).numpy() for t in range(20)])
        write_frame_folder(str(root / f"v{i}"), frames, image_tmpl=PNG_TMPL)
        lines.append(f"v{i} 20 {i % 3}")
    return root, write_list(root / "list.txt", lines)


def data_config(root, list_file, **changes):
    from tests.support import make_data_cfg
    return make_data_cfg(train_root=str(root), train_list=list_file, val_root=str(root), val_list=list_file,
                         **changes)


@pytest.mark.parametrize("rand_aug", [False, True])
def test_device_views_are_the_workers_views(textured_frames, rand_aug):
    """Same (seed, epoch, index) draws either way: the same labels (flips of a paired class swapped), and the same
    pixels: bit-identical without RandAugment, and within the operations' tolerance with it."""
    cfg = data_config(*textured_frames, rand_aug=rand_aug, rand_aug_policy="rand-m9-n4-mstd0.5-inc1", grayscale=0.5,
                      num_sample=2, flip_pairs=[[0, 1]])
    workers = create_dataset(override(cfg, augment_on="workers"), "train", seed=3)
    device = create_dataset(override(cfg, augment_on="device"), "train", seed=3)
    assert workers.augment_on == "workers" and device.augment_on == "device"
    for epoch in (0, 1):
        workers.set_epoch(epoch)
        device.set_epoch(epoch)
        expected = collate_train([workers[i] for i in range(4)])
        raw = collate_train([device[i] for i in range(4)])
        assert isinstance(raw["frames"], list) and raw["frames"][0].shape == (4, 3, 48, 64)   # decoded, not cropped
        assert torch.equal(raw["label"], expected["label"]) and torch.equal(raw["index"], expected["index"])
        views = batch_frames(raw, torch.device("cpu"))
        assert views.shape == expected["frames"].shape == (8, 4, 3, 32, 32) and views.dtype == torch.uint8
        difference = (views.int() - expected["frames"].int()).abs()
        if rand_aug:
            assert (difference <= 1).float().mean() >= 0.995 and difference.float().mean() < 0.05
        else:
            assert difference.max() == 0
    flips = [view.flipped for views_of_clip in raw["augment"] for view in views_of_clip]
    assert any(flips) and not all(flips)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_device_views_of_videos_are_the_workers_views(videos_data, backend):
    """decord decodes at the stored size (parameters drawn after decoding), PyAV is asked for the scaled size (here the
    stored one, scale 48 of 48x64 frames, so swscale does not resample): both give the workers' views exactly."""
    cfg = override(videos_data, video_backend=backend, grayscale=0.5, num_sample=2, scale_size=48)
    workers = create_dataset(override(cfg, augment_on="workers"), "train", seed=7)
    device = create_dataset(override(cfg, augment_on="device"), "train", seed=7)
    expected = collate_train([workers[i] for i in range(4)])
    raw = collate_train([device[i] for i in range(4)])
    assert torch.equal(raw["label"], expected["label"])
    assert torch.equal(batch_frames(raw, torch.device("cpu")), expected["frames"])


def test_parameters_cross_loader_workers(textured_frames):
    """Batches from 2 loader worker processes (parameters pickled between processes) give the same views as the
    main process."""
    cfg = data_config(*textured_frames, rand_aug=True, augment_on="device")
    dataset = create_dataset(cfg, "train", seed=1)
    batches = [next(iter(create_loader(dataset, 4, num_workers=workers))) for workers in (0, 2)]
    main, parallel = (batch_frames(raw, torch.device("cpu")) for raw in batches)
    assert torch.equal(main, parallel)


def test_placement_resolution_and_what_device_cannot_batch(textured_frames):
    assert resolve_augment_on("auto", "cuda") == "device" and resolve_augment_on("auto", "cpu") == "workers"
    assert resolve_augment_on("workers", "cuda") == "workers" and resolve_augment_on("device", "cpu") == "device"
    with pytest.raises(ValueError, match="augment_on"):
        resolve_augment_on("gpu")
    cfg = data_config(*textured_frames)
    assert create_dataset(cfg, "train", device_type="cuda").augment_on == "device"
    assert create_dataset(cfg, "train", device_type="cpu").augment_on == "workers"
    assert create_dataset(override(cfg, augment_on="device"), "val").augment_on == "workers"   # evaluation views
    whole_videos = FullVideoSampler(stride=2)
    assert create_dataset(cfg, "train", device_type="cuda", sampler=whole_videos).augment_on == "workers"
    with pytest.raises(ConfigError, match="data.augment_on: device .* use augment_on: workers"):
        create_dataset(override(cfg, augment_on="device"), "train", sampler=whole_videos)


# -- decoding at the scaled size -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def large_sources(tmp_path_factory):
    """The same 8 frames of 128x160 as JPEG files, as PNG files and as an mp4."""
    root = tmp_path_factory.mktemp("large")
    frames = np.stack([natural_frame(128, 160, t).permute(1, 2, 0).numpy() for t in range(8)])
    write_frame_folder(str(root / "jpeg"), frames, image_tmpl="img_{:05d}.jpg", quality=95)
    write_frame_folder(str(root / "png"), frames, image_tmpl="img_{:05d}.png")
    write_video(str(root / "clip.mp4"), frames)
    return root


def test_readers_tell_the_stored_shape_and_decode_smaller_on_request(large_sources):
    root = large_sources
    jpeg = FrameFolderReader(str(root / "jpeg"), 8, "img_{:05d}.jpg")
    assert jpeg.frame_shape == (128, 160)
    assert jpeg.read([0, 3]).shape == (2, 3, 128, 160)
    assert jpeg.read([0, 3], min_size=(32, 40)).shape == (2, 3, 32, 40)       # DCT scaling by 1/4
    assert jpeg.read([0], min_size=(33, 40)).shape == (1, 3, 64, 80)          # 1/4 would not cover 33 rows
    assert jpeg.read([0], min_size=(100, 120)).shape == (1, 3, 128, 160)      # less than 2x: stored size
    png = FrameFolderReader(str(root / "png"), 8, "img_{:05d}.png")
    assert png.frame_shape == (128, 160) and png.read([1], min_size=(32, 40)).shape == (1, 3, 128, 160)
    encoded = EncodedFramesReader("sample", [(root / "jpeg" / f"img_{i:05d}.jpg").read_bytes() for i in (1, 2)])
    assert encoded.frame_shape == (128, 160) and encoded.read([1], min_size=(32, 40)).shape == (1, 3, 32, 40)
    # the scaled JPEG decode is a faithful small version of the frame
    small = jpeg.read([2], min_size=(32, 40)).float()
    reference = torch.nn.functional.interpolate(jpeg.read([2]).float(), size=(32, 40), mode="area")
    assert (small - reference).abs().mean() < 4

    def read(reader_class, indices, min_size=None):     # a reader per read (PyAV decodes forward once)
        with reader_class(str(root / "clip.mp4")) as reader:
            assert reader.frame_shape == (128, 160)
            return reader.read(indices, min_size=min_size)
    full, scaled = read(PyAVReader, [0, 5]), read(PyAVReader, [0, 5], min_size=(48, 60))
    assert full.shape == (2, 3, 128, 160) and scaled.shape == (2, 3, 48, 60)
    assert read(PyAVReader, [1], min_size=(128, 200)).shape == (1, 3, 128, 160)      # never enlarged
    reference = torch.nn.functional.interpolate(full.float(), size=(48, 60), mode="area")
    # swscale's area filter vs torch's of the same frames; a crop or a shifted frame would be ~30 off
    assert (scaled.float() - reference).abs().mean() < 4
    assert torch.equal(read(DecordReader, [0, 5], min_size=(48, 60)), read(DecordReader, [0, 5]))   # stored size


def test_the_device_placement_decodes_at_the_scaled_size(large_sources, tmp_path):
    list_file = write_list(tmp_path / "list.txt", ["jpeg 8 0", "jpeg 8 1"])
    cfg = data_config(large_sources, list_file, image_tmpl="img_{:05d}.jpg", scale_size=40, input_size=32,
                      num_segments=4)
    device = create_dataset(override(cfg, augment_on="device"), "train", seed=0)
    workers = create_dataset(override(cfg, augment_on="workers"), "train", seed=0)
    sample = device[0]
    assert sample["frames"].shape == (4, 3, 64, 80)          # 1/2 covers the 40x50 scaled frame, 1/4 would not
    assert sample["augment"][0].scaled == (40, 50)
    views = augment_views([sample["frames"]], [sample["augment"]])
    expected = workers[0]["frames"]
    assert views.shape == expected.shape == (1, 4, 3, 32, 32)
    assert (views.float() - expected.float()).abs().mean() < 4     # only the decoder's downscaling differs

    # decord cannot scale: frames over twice the scaled size are resized by the worker (no 1080p frames shipped)
    video_list = write_list(tmp_path / "videos.txt", ["clip.mp4 0", "clip.mp4 1"])
    for backend, stored in (("decord", (40, 50)), ("pyav", (40, 50))):
        videos = override(cfg, train_list=video_list, video_backend=backend, augment_on="device")
        assert create_dataset(videos, "train", seed=0)[0]["frames"].shape == (4, 3, *stored), backend
    near = override(cfg, train_list=video_list, video_backend="decord", augment_on="device", scale_size=80)
    assert create_dataset(near, "train", seed=0)[0]["frames"].shape == (4, 3, 128, 160)   # under 2x: as decoded


# -- training ----------------------------------------------------------------------------------------------------------
def test_training_with_device_augmentation_equals_the_workers_placement(toy_data, tmp_path):
    """The toy config's frames are stored at the scaled size, so the device's views are the workers' pixels: the same
    per-step losses and the same validation."""
    from side4video.config import load_config
    from side4video.engine.trainer import Trainer
    from tests.support import write_toy_config
    runs = {}
    for placement in ("workers", "device"):
        config = write_toy_config(tmp_path / f"{placement}.yaml", toy_data, **{"data.augment_on": placement,
                                                                               "solver.epochs": 1})
        trainer = Trainer(load_config(str(config)), tmp_path / placement)
        summary = trainer.fit()
        assert trainer.train_set.augment_on == placement
        steps = [json.loads(line) for line in (tmp_path / placement / "steps.jsonl").read_text().splitlines()]
        runs[placement] = ([step["loss"] for step in steps], summary["val_top1"])
    assert len(runs["workers"][0]) == 4
    assert runs["device"] == runs["workers"]


def test_the_ablation_runner_augments_on_the_device_too(toy_data, tmp_path):
    """The ablation runner's own loop (not the trainer's) takes device batches: a variant ends with the weights it
    gets from the workers' placement."""
    import yaml

    from side4video.ablation import load_ablation, run_ablation
    from side4video.engine.checkpoint import load_checkpoint
    from tests.support import write_toy_config
    weights = {}
    for placement in ("workers", "device"):
        base = write_toy_config(tmp_path / f"base_{placement}.yaml", toy_data,
                                **{"solver.epochs": 1, "data.augment_on": placement})
        spec_file = tmp_path / f"ablation_{placement}.yaml"
        spec_file.write_text(yaml.safe_dump({"base": str(base), "variants": [{"name": "conv"}],
                                             "budget": {"val_every": 0}, "timing": {"warmup_batches": 1}}))
        run_ablation(load_ablation(spec_file), tmp_path / placement, check=False, command="pytest")
        weights[placement] = load_checkpoint(tmp_path / placement / "conv" / "checkpoint.pt")["model"]
    assert weights["device"].keys() == weights["workers"].keys()
    assert all(torch.equal(weights["device"][k], weights["workers"][k]) for k in weights["workers"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_session.sh runs it)")
def test_device_augmentation_on_cuda_equals_the_cpu(textured_frames):
    """The same batch augmented on a GPU and on the CPU: float kernels may round a value one level apart."""
    cfg = data_config(*textured_frames, rand_aug=True, rand_aug_policy="rand-m9-n4-mstd0.5-inc1", grayscale=0.5,
                      num_sample=2, augment_on="device")
    dataset = create_dataset(cfg, "train", seed=2)
    raw = collate_train([dataset[i] for i in range(4)])
    on_cpu = batch_frames(raw, torch.device("cpu"))
    on_gpu = batch_frames(raw, torch.device("cuda"))
    assert on_gpu.device.type == "cuda"
    difference = (on_cpu.int() - on_gpu.cpu().int()).abs()
    assert difference.max() <= 1 and (difference == 0).float().mean() > 0.99
