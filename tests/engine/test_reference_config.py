"""A config from the Side4Video repository, with only its paths changed, samples, crops and builds its model
as the reference code does (Recognition/datasets/sth.py, kinetics.py, test_vision.py, clip/model.py)."""
from __future__ import annotations

import numpy as np
import torch

from side4video.backbones import describe_backbone
from side4video.config import load_config
from side4video.data import create_dataset
from side4video.data.transforms import eval_crop_geometry
from side4video.models import count_parameters, create_model_from_config
from tests.engine.test_config import SIDE4VIDEO_SSV2


def _reference_config(tmp_path, text: str):
    root = tmp_path / "frames"
    (root / "video").mkdir(parents=True)
    listing = tmp_path / "list.txt"
    listing.write_text("video 47 87\n")
    text = text.replace("/data/sthv2/frames", str(root)).replace("lists/sthv2/train_rgb.txt", str(listing))
    text = text.replace("lists/sthv2/val_rgb.txt", str(listing)).replace("    label_list: 'lists/sth_labels.csv'\n", "")
    path = tmp_path / "sthv2_train_rgb_vitb-16-side4video.yaml"
    path.write_text(text)
    return load_config(path)


def test_the_ssv2_config_samples_crops_and_builds_as_the_reference(tmp_path):
    cfg = _reference_config(tmp_path, SIDE4VIDEO_SSV2)
    train, val = create_dataset(cfg.data, "train"), create_dataset(cfg.data, "val")
    test = create_dataset(cfg.data, "test", test_crops=3, test_clips=2)
    # sth.py: validation ATM rule seg = (F-1)/T, round(seg*i) + int(seg/2), for the 47-frame example
    seg = 46 / 8
    assert val.sampler.validation(47).tolist() == [int(np.round(seg * i)) + int(seg / 2) for i in range(8)]
    # sth.py test clips: round(seg*i) + int(seg/(K+1)*(k+1))
    assert test.sampler.test(47, 2).tolist() == [[int(np.round(seg * i)) + int(seg / 3 * (k + 1)) for i in range(8)]
                                                  for k in range(2)]
    # training reaches the end of the action (frames 40..46) that the TSN rule never sees
    rng = np.random.default_rng(0)
    seen = set(np.concatenate([train.sampler.train(47, rng) for _ in range(400)]).tolist())
    assert set(range(40, 47)) <= seen
    # Augmentation.py: scale (256, 320) for Something-Something, no grayscale, the left/right label swap
    assert train.transform.scale == (256, 320) and train.transform.grayscale == 0
    assert train.flip_label == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    # test_vision.py 3 crops: GroupFullResSample on the 256 x 320 frame: (0, 2h), (4w, 2h), (2w, 2h), 224 px
    scaled, views = eval_crop_geometry(240, 427, 224, test.transform.scale, 3, three_crop=test.transform.three_crop)
    assert scaled == (256, 320) and [(top, left) for top, left, _ in views] == [(16, 0), (16, 96), (16, 48)]
    # clip/model.py: every layer tapped, LayerNorm(768) → Linear(768 → 320), pre-norm blocks, BN before pooling
    with torch.device("meta"):
        model = create_model_from_config(cfg, describe_backbone(cfg.network.arch))
    assert model.backbone_layers == list(range(12)) and model.taps[0].norm.normalized_shape == (768,)
    assert not model.blocks[0].post_norm and model.head_norm is not None
    assert model.fc.out_features == 174 and count_parameters(model) == 21_112_366


def test_a_kinetics_config_follows_the_kinetics_rules(tmp_path):
    text = SIDE4VIDEO_SSV2.replace("dataset: somethingv2", "dataset: k400").replace("num_classes: 174",
                                                                                   "num_classes: 400")
    cfg = _reference_config(tmp_path, text)
    val, test = create_dataset(cfg.data, "val"), create_dataset(cfg.data, "test", test_crops=3, test_clips=4)
    assert val.sampler.validation(47).tolist() == [int(47 / 8 * i) % 47 for i in range(8)]
    starts = np.linspace(0, 47 / 8 - 1, 4, dtype=int)
    assert test.sampler.test(47, 4).tolist() == [[int(s + 47 / 8 * i) % 47 for i in range(8)] for s in starts]
    train = create_dataset(cfg.data, "train")
    assert train.transform.scale == 256 and train.transform.grayscale == 0.2 and train.flip_label == {}
