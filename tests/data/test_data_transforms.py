"""Crop geometry, flips, grayscale, RandAugment consistency and normalisation."""
import numpy as np
import pytest
import torch

from side4video.data.transforms import (
    ClipRandAugment,
    EvalViews,
    TrainAugmentation,
    default_flip_pairs,
    default_grayscale,
    default_scale_size,
    eval_crop_geometry,
    multiscale_box,
    normalize_frames,
    random_resized_box,
    resolve_flip_pairs,
    resolve_grayscale,
    resolve_scale_size,
    scaled_shape,
    to_grayscale,
)
from tests.support import coded_frames


def as_clip(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def view_origin(view: torch.Tensor) -> tuple[int, int]:
    """(top, left) of a crop of coded frames, read from its top-left pixel (B = 4y, R = 4x)."""
    return int(view[0, 2, 0, 0]) // 4, int(view[0, 0, 0, 0]) // 4


def test_scale_rules():
    assert default_scale_size(224, "k400") == 256
    assert default_scale_size(224, "somethingv2") == (256, 320)
    assert default_scale_size(224, "ssv2") == (256, 320)  # missed before the one SS test
    assert default_scale_size(224, "smth") == (256, 320)
    assert default_scale_size(112, "sthv1") == (128, 160)
    assert default_scale_size(112, "k400") == 128  # proportional (the reference would use 112)
    assert resolve_scale_size([240, 320], 224) == (240, 320)
    assert resolve_scale_size(None, 224, "SSv2") == (256, 320)
    assert resolve_scale_size(300, 224) == 300
    assert scaled_shape(240, 320, 256) == (256, 341)
    assert scaled_shape(320, 240, 256) == (341, 256)
    assert scaled_shape(240, 320, (256, 320)) == (256, 320)


def boxes(height, width, input_size, scale, crops, three_crop="reference"):
    return eval_crop_geometry(height, width, input_size, scale, crops, three_crop)


def test_one_crop_is_torchvisions_centre_after_scaling():
    # (256, 341): top round(32 / 2) = 16, left round(117 / 2) = round(58.5) = 58 (half to even)
    assert boxes(480, 640, 224, 256, 1) == ((256, 341), [(16, 58, False)])
    assert boxes(640, 480, 224, 256, 1) == ((341, 256), [(58, 16, False)])  # portrait
    assert boxes(240, 320, 224, (256, 320), 1) == ((256, 320), [(16, 48, False)])
    # W - S = 7: round(3.5) = 4, where (W - S) // 2 would be 3; W - S = 5: round(2.5) = 2
    assert boxes(40, 39, 32, (40, 39), 1) == ((40, 39), [(4, 4, False)])
    assert boxes(37, 40, 32, (37, 40), 1) == ((37, 40), [(2, 4, False)])
    # scale 40 keeps a 40x50 frame as is, so pixel coordinates can be read back exactly
    views, flipped = EvalViews(32, 40, 1)(as_clip(coded_frames(2, 40, 50)))
    assert views.shape == (1, 2, 3, 32, 32) and flipped == [False]
    assert view_origin(views[0]) == (4, 9)
    views, _ = EvalViews(32, (40, 39), 1)(as_clip(coded_frames(2, 40, 39)))
    assert view_origin(views[0]) == (4, 4)


def test_three_crops_reference_full_res_sample():
    # GroupFullResSample on the frame scaled by the scale rule: w = (W - S) // 4, h = (H - S) // 4,
    # (top, left) = (2h, 0), (2h, 4w), (2h, 2w): left, right, centre
    no_flip = [False] * 3
    assert boxes(240, 320, 224, (256, 320), 3) == ((256, 320), list(zip([16] * 3, [0, 96, 48], no_flip)))
    # (256, 341): W - S = 117 is not a multiple of 4: w = 29, right crop at 116 (not 117), centre 58
    assert boxes(480, 640, 224, 256, 3) == ((256, 341), list(zip([16] * 3, [0, 116, 58], no_flip)))
    # portrait (341, 256): the same formula, no top/centre/bottom switch: h = 29, w = 8
    assert boxes(640, 480, 224, 256, 3) == ((341, 256), list(zip([58] * 3, [0, 32, 16], no_flip)))
    # pixels: landscape 40x50, w = 18 // 4 = 4, h = 8 // 4 = 2
    views, flipped = EvalViews(32, 40, 3)(as_clip(coded_frames(2, 40, 50)))
    assert [view_origin(v) for v in views] == [(4, 0), (4, 16), (4, 8)] and flipped == no_flip
    # portrait 50x40: h = 4, w = 2
    views, _ = EvalViews(32, 40, 3)(as_clip(coded_frames(2, 50, 40)))
    assert [view_origin(v) for v in views] == [(8, 0), (8, 8), (8, 4)]
    assert EvalViews(32, 40, 3).three_crop == "reference"


def test_three_crops_full_height_span_the_long_side_at_input_size():
    # landscape 32x50: short side already 32 -> left, centre, right
    views, flipped = EvalViews(32, 40, 3, three_crop="full_height")(as_clip(coded_frames(2, 32, 50)))
    assert [view_origin(v) for v in views] == [(0, 0), (0, 9), (0, 18)] and flipped == [False] * 3
    # portrait 50x32 -> top, centre, bottom
    views, _ = EvalViews(32, 40, 3, three_crop="full_height")(as_clip(coded_frames(2, 50, 32)))
    assert [view_origin(v) for v in views] == [(0, 0), (9, 0), (18, 0)]
    # geometry of a real-sized frame: short side scaled to the input size, not to scale_size
    assert boxes(256, 320, 224, (256, 320), 3, "full_height") == ((224, 280), [(0, 0, False), (0, 28, False),
                                                                              (0, 56, False)])
    with pytest.raises(ValueError, match="three_crop"):
        EvalViews(32, 40, 3, three_crop="middle")


def test_five_and_ten_crops_are_the_reference_fixed_offsets():
    # fill_fix_offset(False): (0, 0), (0, 4w), (4h, 0), (4h, 4w), (2h, 2w) with w = (W - S) // 4, h = (H - S) // 4
    corners = [(0, 0), (0, 116), (32, 0), (32, 116), (16, 58)]  # (256, 341): w = 29, h = 8; 4w = 116 != 117
    assert boxes(480, 640, 224, 256, 5) == ((256, 341), [(t, left, False) for t, left in corners])
    assert boxes(480, 640, 224, 256, 10) == ((256, 341), [(t, left, f) for f in (False, True) for t, left in corners])
    portrait = [(0, 0), (0, 32), (116, 0), (116, 32), (58, 16)]  # (341, 256): w = 8, h = 29
    assert boxes(640, 480, 224, 256, 5) == ((341, 256), [(t, left, False) for t, left in portrait])
    ss = [(0, 0), (0, 96), (32, 0), (32, 96), (16, 48)]  # (256, 320): w = 24, h = 8
    assert boxes(240, 320, 224, (256, 320), 5)[1] == [(t, left, False) for t, left in ss]
    # pixels: 40x50, w = 4, h = 2: right column 16 (W - S = 18), centre (4, 8) (not (4, 9))
    views, flipped = EvalViews(32, 40, 5)(as_clip(coded_frames(2, 40, 50)))
    assert [view_origin(v) for v in views] == [(0, 0), (0, 16), (8, 0), (8, 16), (4, 8)] and flipped == [False] * 5
    views10, flipped10 = EvalViews(32, 40, 10)(as_clip(coded_frames(2, 40, 50)))
    assert flipped10 == [False] * 5 + [True] * 5
    assert torch.equal(views10[:5], views)
    assert torch.equal(views10[5:], views.flip(-1))


def test_crops_must_fit_the_scaled_frame():
    with pytest.raises(ValueError, match="smaller than"):
        boxes(100, 100, 224, 200, 1)
    with pytest.raises(ValueError, match="test_crops"):
        EvalViews(32, 40, 4)


def test_reference_train_augmentation_defaults():
    # get_augmentation: GroupRandomGrayscale(p = 0 for Something-Something, else 0.2)
    assert default_grayscale("somethingv2") == 0.0 and default_grayscale("ssv2") == 0.0
    assert default_grayscale("k400") == 0.2 and default_grayscale("toy") == 0.2
    assert resolve_grayscale(None, "sthv1") == 0.0 and resolve_grayscale(None, "k400") == 0.2
    assert resolve_grayscale(0.5, "sthv1") == 0.5 and resolve_grayscale(0.0, "k400") == 0.0
    # GroupRandomHorizontalFlip_sth: {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert default_flip_pairs("somethingv2") == [[86, 87], [93, 94], [166, 167]]
    assert default_flip_pairs("kinetics400") == []
    assert resolve_flip_pairs(None, "smth") == [[86, 87], [93, 94], [166, 167]]
    assert resolve_flip_pairs([], "smth") == [] and resolve_flip_pairs([[0, 1]], "k400") == [[0, 1]]


def test_random_resized_box_respects_area_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_box(100, 120, (0.3, 0.6), (0.75, 4 / 3), rng)
        assert 0 <= top <= 100 - h and 0 <= left <= 120 - w
        assert 0.3 * 12000 * 0.9 <= h * w <= 0.6 * 12000 * 1.1
        assert 0.7 <= w / h <= 1.4


def test_multiscale_box_uses_tsn_sizes_and_fixed_positions():
    rng = np.random.default_rng(0)
    sizes = {256, 224, 192, 168}  # int(256 * s) for s in (1, .875, .75, .66)
    seen = set()
    for _ in range(200):
        top, left, h, w = multiscale_box(256, 340, 224, rng)
        assert h in sizes and w in sizes
        assert abs(sorted(sizes).index(h) - sorted(sizes).index(w)) <= 1  # max_distort = 1
        seen.add((h, w))
        assert top in {q * ((256 - h) // 4) for q in range(5)} and left in {q * ((340 - w) // 4) for q in range(5)}
    assert len(seen) == 10  # every allowed (h, w) pair shows up


def test_train_augmentation_output_and_flip():
    clip = as_clip(coded_frames(3, 40, 50))
    augment = TrainAugmentation(32, 40, crop="center", flip=True)
    outputs = {}
    for seed in range(20):
        frames, flipped = augment(clip, np.random.default_rng(seed))
        assert frames.shape == (3, 3, 32, 32) and frames.dtype == torch.uint8
        outputs[flipped] = frames
    assert set(outputs) == {True, False}
    assert torch.equal(outputs[True], outputs[False].flip(-1))


def test_grayscale_matches_pil_luma():
    from PIL import Image

    frames = coded_frames(1, 8, 8)
    grey = to_grayscale(as_clip(frames))
    expected = np.asarray(Image.fromarray(frames[0]).convert("L"))
    assert torch.equal(grey[0, 0], grey[0, 1]) and torch.equal(grey[0, 0], grey[0, 2])
    assert np.abs(grey[0, 0].numpy().astype(int) - expected).max() <= 1


def test_rand_augment_applies_the_same_ops_to_every_frame():
    augment = ClipRandAugment("rand-m9-n4-mstd0.5-inc1", translate_const=20, mean=(0.5, 0.5, 0.5))
    frame = np.random.default_rng(0).integers(0, 256, size=(1, 40, 50, 3), dtype=np.uint8)
    clip = as_clip(np.repeat(frame, 4, axis=0))
    results = [augment(clip, seed) for seed in range(6)]
    for result in results:
        assert result.shape == clip.shape
        assert all(torch.equal(result[0], result[t]) for t in range(1, 4))  # identical frames stay identical
    assert any(not torch.equal(result, clip) for result in results)  # it does change frames
    assert len({result.numpy().tobytes() for result in results}) > 1  # different seeds, different ops
    assert torch.equal(augment(clip, 3), results[3])  # reproducible


def test_rand_augment_leaves_the_callers_global_rngs_alone():
    import random

    augment = ClipRandAugment("rand-m7-n4-mstd0.5-inc1", translate_const=20, mean=(0.5, 0.5, 0.5))
    clip = as_clip(coded_frames(2, 16, 16))
    random.seed(1)
    np.random.seed(1)
    augment(clip, 123)
    after = (random.random(), np.random.rand())
    random.seed(1)
    np.random.seed(1)
    assert after == (random.random(), np.random.rand())


def test_normalize_frames():
    frames = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = normalize_frames(frames, [0.5, 0.25, 0.0], [0.5, 0.25, 1.0])
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([-1.0, -1.0, 0.0]))
    torch.testing.assert_close(out[1, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))
    with pytest.raises(TypeError):
        normalize_frames(out, [0.5] * 3, [0.5] * 3)
