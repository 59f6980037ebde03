"""The config schema: Side4Video YAMLs parse, legacy keys warn, unknown keys stop with a suggestion."""
from __future__ import annotations

import pytest

from side4video.config import ConfigError, load_config, parse_overrides

# The layout and keys of the Side4Video repository's SSv2 ViT-B/16 config, paths changed.
SIDE4VIDEO_SSV2 = """\
resume:
pretrain:
seed: 1024
data:
    dataset: somethingv2
    modality: RGB
    num_segments: 8
    seg_length: 1
    batch_size: 16
    workers: 4
    num_classes: 174
    image_tmpl: '{:06d}.jpg'
    train_root: '/data/sthv2/frames'
    val_root: '/data/sthv2/frames'
    train_list: 'lists/sthv2/train_rgb.txt'
    val_list: 'lists/sthv2/val_rgb.txt'
    label_list: 'lists/sth_labels.csv'
    input_size: 224
    random_shift: True
    num_sample: 2
    rand_aug: True
    rand_erase: False
network:
    arch: ViT-B/16  #ViT-B/32 ViT-B/16
    init: True
    tm: False # localuni t1d atm False
    drop_out: 0.0
    emb_dropout: 0.0
    type: clip_sth
    sim_header: None  # Transf   None
    joint_st: False
    drop_fc: 0
    n_emb: 320
    side_dim: 320
    fix_clip: False
    my_fix_clip: True
solver:
    type: cosine
    epochs: 30
    start_epoch: 0
    epoch_offset: 0
    optim: adamw
    lr: 1.e-3
    lr_warmup_step: 4
    weight_decay: 0.15
    betas: [0.9, 0.999]
    loss_type: CE
    evaluate: False
    clip_ratio: 1
    grad_accumulation_steps: 1
    smoothing: 0.1
    layer_decay: 1.0 # 0.7
logging:
    print_freq: 10
    eval_freq: 1
    skip_epoch: [1,3,4,5,7,9]
"""


def test_side4video_repository_config_parses_with_one_legacy_note(tmp_path, caplog):
    path = tmp_path / "sthv2_train_rgb_vitb-16-side4video.yaml"
    path.write_text(SIDE4VIDEO_SSV2)
    with caplog.at_level("WARNING", logger="side4video"):
        cfg = load_config(path)
        load_config(path)         # a command that reads the config twice still notes it once
    notes = [r.getMessage() for r in caplog.records if "have no effect" in r.getMessage()]
    assert len(notes) == 1, notes
    for legacy in ("network.tm", "network.sim_header", "network.fix_clip", "network.joint_st", "solver.layer_decay"):
        assert legacy in notes[0]
    assert "network.drop_out" not in notes[0], "drop_out is a real key (0 only)"
    assert cfg.solver.lr == pytest.approx(1e-3) and cfg.data.num_sample == 2 and cfg.network.side_dim == 320
    assert cfg.logging.skip_epoch == [1, 3, 4, 5, 7, 9]
    assert cfg.network.head == "side4video" and cfg.network.arch == "ViT-B/16"
    assert cfg.solver.epochs == 30 and cfg.data.image_tmpl == "{:06d}.jpg"


def test_unknown_keys_stop_with_a_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n    num_classes: 3\n    num_segmets: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'data.num_segmets'; did you mean "
                                          r"'data.num_segments'\?"):
        load_config(path)
    with pytest.raises(ConfigError, match="did you mean 'solver.lr'"):
        load_config(None, ["data.num_classes=3", "data.lr=0.1"])
    with pytest.raises(ConfigError, match="unknown config key 'foo'"):
        load_config(None, ["data.num_classes=3", "foo=1"])


def test_overrides_are_parsed_as_yaml_and_numbers_are_numbers():
    assert parse_overrides(["solver.lr=1e-4", "data.flip=false", "data.flip_pairs=[[1, 2]]"]) == \
        {"solver.lr": "1e-4", "data.flip": False, "data.flip_pairs": [[1, 2]]}
    cfg = load_config(None, ["data.num_classes=3", "solver.lr=1e-4", "solver.epochs=2.0"])
    assert cfg.solver.lr == 1e-4 and isinstance(cfg.solver.lr, float)
    assert cfg.solver.epochs == 2 and isinstance(cfg.solver.epochs, int)
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["solver.lr"])


def test_values_are_validated():
    with pytest.raises(ConfigError, match="'solver.zero_stage' must be one of"):
        load_config(None, ["data.num_classes=3", "solver.zero_stage=3"])
    with pytest.raises(ConfigError, match="'data.num_classes' is required"):
        load_config(None)
    with pytest.raises(ConfigError, match="rand_erase"):
        load_config(None, ["data.num_classes=3", "data.rand_erase=true"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/config.yaml")


def test_toy_configs_are_valid():
    for name in ("toy_side4video", "toy_frame_avg"):
        cfg = load_config(f"configs/toy/{name}.yaml")
        assert cfg.data.num_classes == 8


@pytest.mark.parametrize("override,message", [
    ("solver.lr=abc", "--opts: 'solver.lr' must be a number > 0, got 'abc'"),
    ("data.batch_size=-1", "--opts: 'data.batch_size' must be a positive integer, got -1"),
    ("data.num_segments=0", "--opts: 'data.num_segments' must be a positive integer, got 0"),
    ("data.input_size=7", "--opts: 'data.input_size' must be an integer >= 8, got 7"),
    ("solver.grad_accumulation_steps=0", "'solver.grad_accumulation_steps' must be a positive integer, got 0"),
    ("solver.smoothing=1.5", "'solver.smoothing' must be a number in [0, 1), got 1.5"),
    ("solver.epochs=-1", "'solver.epochs' must be a positive integer, got -1"),
    ("data.crop_area=[2,3]", "'data.crop_area' must be a list of 2 values, each a number in [0, 1] (0 < low <= high"),
    ("data.max_bad_fraction=2", "'data.max_bad_fraction' must be a number in [0, 1], got 2"),
    ("data.flip=maybe", "'data.flip' must be true or false, got 'maybe'"),
    ("network.drop_out=0.1", "'network.drop_out' is 0.1, but the backbone is frozen and runs in eval mode"),
    ("network.side_modules=[{type: tsm, onlin: true}]",
     "'network.side_modules' entry 0: side module 'tsm' has no argument 'onlin'; did you mean 'online'?"),
    ("network.side_modules=[{type: gcc}]", "unknown side module 'gcc'; did you mean 'gc'?"),
    ("solver.plugins=[{type: emma}]", "unknown training plugin 'emma'; did you mean 'ema'?"),
    ("solver.plugins=[{type: ema, decai: 0.9}]",
     "training plugin 'ema' has no argument 'decai'; did you mean 'decay'?"),
])
def test_bad_values_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["data.num_classes=3", override])
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_none_is_a_value_where_the_schema_says_so():
    cfg = load_config(None, ["data.num_classes=3", "network.temporal_module=none", "network.side_layers=None"])
    assert cfg.network.temporal_module == "none" and cfg.network.side_layers is None
    cfg = load_config(None, ["data.num_classes=3", "network.temporal_module=None"])
    assert cfg.network.temporal_module == "none"


def test_n_emb_is_an_alias_of_side_dim():
    assert load_config(None, ["data.num_classes=3", "network.n_emb=576"]).network.side_dim == 576
    both = load_config(None, ["data.num_classes=3", "network.n_emb=576", "network.side_dim=320"])
    assert both.network.side_dim == 320


def test_pretrained_dir_follows_the_environment(monkeypatch):
    from side4video.engine.builders import pretrained_dir
    cfg = load_config(None, ["data.num_classes=3"])
    monkeypatch.delenv("SIDE4VIDEO_PRETRAINED_DIR", raising=False)
    assert pretrained_dir(cfg) == "clip_pretrain"
    monkeypatch.setenv("SIDE4VIDEO_PRETRAINED_DIR", "/models/clip")
    assert pretrained_dir(cfg) == "/models/clip"
    explicit = load_config(None, ["data.num_classes=3", "network.pretrained_dir=/elsewhere"])
    assert pretrained_dir(explicit) == "/elsewhere"


def test_every_key_is_typed_and_documented():
    from side4video.config import FLAT_SCHEMA, default_config
    from side4video.config.types import Type
    assert all(isinstance(key.type, Type) and key.doc for key in FLAT_SCHEMA.values())
    defaults = default_config()
    defaults["data"]["num_classes"] = 3
    cfg = load_config(None, {"data.num_classes": 3})
    assert cfg.toDict() | {"config_path": None} == defaults | {"config_path": None}


def test_check_mapping_types_defaults_and_hints_for_a_tools_own_file_format():
    """A tool's small file format (the ablation YAML) is checked by the same types as the config."""
    from side4video.config import check_mapping
    from side4video.config.schema import Key
    from side4video.config.types import Int, ListOf, Str
    table = {"name": Key("x", "a name", Str()), "budget": {"epochs": Key(1, "epochs", Int(min=1)),
                                                          "views": Key([1], "views", ListOf(Int(min=1)))}}
    assert check_mapping({"budget": {"epochs": "3"}}, table, "f.yaml") == {"name": "x",
                                                                          "budget": {"epochs": 3, "views": [1]}}
    assert check_mapping(None, table, "f.yaml")["budget"] == {"epochs": 1, "views": [1]}
    with pytest.raises(ConfigError, match=r"^f.yaml: unknown key 'budget.epoch'; did you mean 'budget.epochs'\?$"):
        check_mapping({"budget": {"epoch": 3}}, table, "f.yaml")
    with pytest.raises(ConfigError, match=r"^f.yaml: 'budget.epochs' must be a positive integer, got -1$"):
        check_mapping({"budget": {"epochs": -1}}, table, "f.yaml")
    with pytest.raises(ConfigError, match=r"^f.yaml: 'budget' must be a mapping, got 7$"):
        check_mapping({"budget": 7}, table, "f.yaml")
