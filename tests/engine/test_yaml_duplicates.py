"""A key given twice in one mapping of a YAML file is refused (YAML itself would silently keep the last value)."""
from __future__ import annotations

import re

import pytest

from side4video.config import ConfigError, load_config
from side4video.config.loader import read_yaml_mapping


def write(tmp_path, text: str, name: str = "cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_training_config_with_a_key_twice_names_file_key_and_both_lines(tmp_path):
    path = write(tmp_path, "data:\n    num_classes: 3\nsolver:\n    lr: 3e-3\n    epochs: 2\n    lr: 5.0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and "'solver.lr'" in message and "lines 4 and 6" in message


@pytest.mark.parametrize("text, key, lines", [
    ("data:\n  num_classes: 3\ndata:\n  num_classes: 4\n", "data", "lines 1 and 3"),       # a whole section twice
    ("seed: 1\nseed: 2\n", "seed", "lines 1 and 2"),
    ("solver: {lr: 0.1, lr: 0.2}\n", "solver.lr", "twice on line 1"),                         # flow style
    ("solver:\n  lr: 0.1\n  'lr': 0.2\n", "solver.lr", "lines 2 and 3"),                     # quoted: the same key
    ("a:\n  b:\n    c: 1\n    d: 2\n    c: 3\n", "a.b.c", "lines 3 and 5"),                  # deeper
    ("variants:\n  - {name: x, name: y}\n", "variants[0].name", "twice on line 2"),           # inside a list
])
def test_every_yaml_read_through_read_yaml_mapping_refuses_duplicates(tmp_path, text, key, lines):
    path = write(tmp_path, text, "ablation.yaml")
    with pytest.raises(ConfigError, match=rf"ablation\.yaml: duplicate key '{re.escape(key)}' \({lines}\)"):
        read_yaml_mapping(path)


def test_same_key_in_different_mappings_anchors_and_merges_stay_allowed(tmp_path):
    path = write(tmp_path, """\
base: &base
  lr: 0.1
  epochs: 2
fast:
  <<: *base
  lr: 0.5          # overriding a merged key is what merge keys are for
other:
  lr: 0.3          # the same name in another section
list:
  - {lr: 1}
  - {lr: 2}
""")
    loaded = read_yaml_mapping(path)
    assert loaded["fast"] == {"lr": 0.5, "epochs": 2} and loaded["base"]["lr"] == 0.1
    assert [item["lr"] for item in loaded["list"]] == [1, 2]


def test_loading_stays_plain_data_only(tmp_path):
    path = write(tmp_path, "data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_yaml_mapping(path)
    # nested plain data still loads
    assert read_yaml_mapping(write(tmp_path, "a: 1\nb: {c: 2}\n"))["b"] == {"c": 2}
