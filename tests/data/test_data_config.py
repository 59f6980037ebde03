"""create_dataset from a validated data section: automatic keys, explicit values, loader options, error types."""
import logging

import pytest
from dotmap import DotMap

from side4video.config import config_section
from side4video.data import TooManyUnreadableInputs, create_dataset, create_loader, create_sampler, loader_options
from side4video.data.transforms import SOMETHING_FLIP_PAIRS
from side4video.errors import ConfigError, DataError, Side4VideoError
from tests.support import override, write_list

SS_PAIRS = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}


def test_protocol_auto_follows_the_dataset_name(frames_data):
    assert create_dataset(frames_data, "train").sampler.protocol == "kinetics"  # dataset 'custom'
    assert create_dataset(override(frames_data, dataset="toy"), "train").sampler.protocol == "kinetics"
    ss = override(frames_data, dataset="ssv2", flip_pairs=[])
    assert create_dataset(ss, "train").sampler.protocol == "sth"
    assert create_dataset(override(ss, sampling_protocol="tsn"), "train").sampler.protocol == "tsn"
    assert create_dataset(override(frames_data, sampling_protocol="sth"), "val").sampler.protocol == "sth"
    sampler = create_sampler(override(frames_data, dense_range=64, sampling="dense"))
    assert sampler.dense and sampler.dense_range == 64 and sampler.frames_per_clip == 4


def test_grayscale_auto_and_explicit(frames_data):
    auto = override(frames_data, grayscale=None)
    assert create_dataset(auto, "train").transform.grayscale == 0.2
    assert create_dataset(override(auto, dataset="somethingv2", num_classes=174), "train").transform.grayscale == 0.0
    assert create_dataset(override(auto, dataset="sthv1", num_classes=174, grayscale=0.4),
                         "train").transform.grayscale == 0.4
    assert create_dataset(override(auto, grayscale=0.0), "train").transform.grayscale == 0.0


def test_flip_pairs_auto_and_explicit(frames_data):
    assert create_dataset(frames_data, "train").flip_label == {}
    assert create_dataset(frames_data, "test").flip_permutation() is None
    ss = override(frames_data, dataset="something-something-v2", num_classes=174)
    assert create_dataset(ss, "train").flip_label == SS_PAIRS
    permutation = create_dataset(ss, "test").flip_permutation()
    assert permutation[86] == 87 and permutation[167] == 166 and permutation[0] == 0
    assert [list(p) for p in SOMETHING_FLIP_PAIRS] == [[86, 87], [93, 94], [166, 167]]
    assert create_dataset(override(ss, flip_pairs=[]), "train").flip_label == {}
    assert create_dataset(override(ss, flip_pairs=[[3, 4]]), "train").flip_label == {3: 4, 4: 3}
    assert create_dataset(override(frames_data, flip_pairs=[[0, 2]]), "train").flip_label == {0: 2, 2: 0}
    # the automatic SS pairs need at least 168 classes: say so instead of failing on a label
    with pytest.raises(DataError, match=r"defaults to the reference's Something-Something pairs.*flip_pairs"):
        create_dataset(override(frames_data, dataset="sthv2"), "train")


def test_scale_rule_and_three_crop_from_the_config(frames_data):
    ss = override(frames_data, dataset="ssv2", flip_pairs=[], scale_size=None, input_size=224)
    assert create_dataset(ss, "val").transform.scale == (256, 320)
    assert create_dataset(override(ss, dataset="k400"), "val").transform.scale == 256
    test = create_dataset(override(frames_data, test_crops=3), "test")
    assert test.transform.three_crop == "reference" and test.transform.num_crops == 3
    full = create_dataset(override(frames_data, test_crops=3, three_crop="full_height"), "test")
    assert full.transform.three_crop == "full_height"
    assert full[0]["frames"].shape == (3, 4, 3, 32, 32)


def test_build_dataset_takes_only_validated_sections(frames_data):
    with pytest.raises(TypeError, match="config_section"):
        create_dataset(DotMap(num_classes=3, train_list=frames_data.train_list), "train")
    with pytest.raises(TypeError):
        create_dataset(None, "train")
    with pytest.raises(ValueError, match="split"):
        create_dataset(frames_data, "holdout")


def test_config_misuse_is_a_config_error(frames_data):
    with pytest.raises(ConfigError, match="seg_length"):
        create_dataset(override(frames_data, seg_length=2), "val", dense=True)
    with pytest.raises(ConfigError, match="seg_length"):  # the schema refuses the same in the config itself
        override(frames_data, seg_length=2, sampling="dense")
    with pytest.raises(ConfigError, match="dense_range"):
        create_dataset(override(frames_data, dense_range=2, sampling_protocol="kinetics"), "val", dense=True)
    with pytest.raises(ConfigError, match="sampling_protocol"):
        override(frames_data, sampling_protocol="slowfast")
    with pytest.raises(ConfigError, match="three_crop"):
        override(frames_data, three_crop="top")


def test_loader_options_pass_prefetch_factor_with_workers(frames_data):
    assert loader_options(override(frames_data, workers=0)) == dict(num_workers=0, pin_memory=False,
                                                                    persistent_workers=False)
    options = loader_options(override(frames_data, workers=2, prefetch_factor=3), device_type="cuda")
    assert options == dict(num_workers=2, pin_memory=True, persistent_workers=True, prefetch_factor=3)
    assert loader_options(override(frames_data, workers=2), persistent_workers=False)["prefetch_factor"] == 4
    dataset = create_dataset(frames_data, "val")
    loader = create_loader(dataset, 2, **loader_options(override(frames_data, workers=1, prefetch_factor=3)))
    assert loader.prefetch_factor == 3 and loader.num_workers == 1
    assert len(list(loader)) == 3


def test_user_errors_share_the_hierarchy(tmp_path, frames_data):
    bad = write_list(tmp_path / "bad.txt", ["v0 20 0", "v1 twenty 1 x"])
    with pytest.raises(DataError, match=r"bad\.txt:2"):
        create_dataset(override(frames_data, train_list=bad), "train")
    out_of_range = write_list(tmp_path / "range.txt", ["v0 20 3"])
    with pytest.raises(DataError, match=r"range\.txt:1: label 3 is outside \[0, 3\)"):
        create_dataset(override(frames_data, train_list=out_of_range), "train")
    assert issubclass(TooManyUnreadableInputs, DataError) and issubclass(TooManyUnreadableInputs, RuntimeError)
    assert issubclass(DataError, Side4VideoError) and issubclass(DataError, ValueError)


def test_duplicate_lines_warn_once_per_list(tmp_path, frames_data, caplog):
    listed = write_list(tmp_path / "dups.txt", ["v0 20 0", "v1 20 1", "v0 20 0", "v2 20 2", "v1 20 1", "v0 20 0"])
    with caplog.at_level(logging.WARNING, logger="side4video"):
        dataset = create_dataset(override(frames_data, train_list=listed), "train")
    assert len(dataset) == 6  # every copy is kept
    warnings = [r for r in caplog.records if "duplicate" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].name == "side4video"
    message = warnings[0].getMessage()
    assert str(listed) in message and "3 duplicate entries" in message and "'v0' on lines 1, 3, 6" in message
    assert "\n" not in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="side4video"):
        create_dataset(frames_data, "train")
    assert not [r for r in caplog.records if "duplicate" in r.getMessage()]


def test_config_section_is_what_tests_and_tools_use():
    section = config_section("data", {"num_classes": 5, "train_list": "x.txt"})
    assert section.flip_pairs is None and section.grayscale is None and section.sampling_protocol == "auto"
    assert section.dense_range == 128 and section.three_crop == "reference" and section.prefetch_factor == 4
