"""The ablation runner: variants side by side on one frozen-backbone pass per batch, decoupled, testable outputs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from side4video.errors import ConfigError
from tests.support import REPO, child_env, write_toy_config

TSM = {"temporal_module": "none", "side_modules": [{"type": "tsm", "fold_div": 8}]}
def run_clean(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=900)


def write_ablation(path: Path, base: Path, variants: list, **top) -> Path:
    path.write_text(yaml.safe_dump({"base": str(base), "variants": variants, **top}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def base_config(toy_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ablation_base")
    return write_toy_config(folder / "base.yaml", toy_data, **{"solver.epochs": 1})


@pytest.fixture(scope="module")
def ablation_run(base_config, tmp_path_factory):
    """One epoch of four variants (the default, its twin, TSM, the default validated through an EMA), every backbone
    tap counted."""
    from side4video.ablation import load_ablation, run_ablation
    from side4video.backbones.frozen import FrozenEncoder
    folder = tmp_path_factory.mktemp("ablation")
    config = write_ablation(folder / "ablation.yaml", base_config,
                            [{"name": "conv"}, {"name": "conv_twin", "network": {}}, {"name": "tsm", "network": TSM},
                             {"name": "conv_ema", "solver": {"plugins": [{"type": "ema", "decay": 0.5}]}}],
                            timing={"warmup_batches": 1})
    spec = load_ablation(config)
    taps: list[tuple[int, tuple[int, ...]]] = []
    original = FrozenEncoder.tap

    def counting_tap(self, images, layers="all", embedding=True, **kwargs):
        frames = images.shape[0] * (images.shape[1] if images.dim() == 5 else 1)
        taps.append((frames, tuple(self.resolve_layers(layers))))
        return original(self, images, layers=layers, embedding=embedding, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FrozenEncoder, "tap", counting_tap)
        results = run_ablation(spec, folder / "out", check=False, command="pytest")
    return {"spec": spec, "results": results, "out": folder / "out", "taps": taps}


def _row(results, name):
    return next(row for row in results["variants"] if row["name"] == name)


def test_backbone_is_tapped_once_per_batch(ablation_run):
    results, taps, spec = ablation_run["results"], ablation_run["taps"], ablation_run["spec"]
    cfg = spec.base_cfg
    train_frames = cfg.data.batch_size * cfg.data.num_segments           # 8 clips x 8 frames
    train_taps = [t for t in taps if t[0] == train_frames]
    # 32 toy videos / batch 8 = 4 batches, 1 epoch: 4 taps for the 4 variants, not 16
    assert len(train_taps) == results["batches_per_epoch"] * spec.epochs == results["backbone_passes"]["train"] == 4
    assert all(layers == (0, 1, 2, 3) for _, layers in train_taps), "one tap for the union of the layers"
    # test time: 16 videos x 6 views in batches of 8 videos = 48 clips per chunk: one tap per batch for all variants
    assert len(taps) - len(train_taps) == results["backbone_passes"]["eval"] == 2


def test_every_variant_trains(ablation_run, base_config):
    from side4video.config import load_config
    from side4video.engine.builders import backbone_from_config, model_from_config
    from side4video.engine.checkpoint import load_checkpoint
    out = ablation_run["out"]
    base = load_config(base_config)
    backbone = backbone_from_config(base)
    for variant in ablation_run["spec"].variants:
        initial = model_from_config(variant.cfg, backbone, seed=variant.cfg.seed).state_dict()
        trained = load_checkpoint(out / variant.name / "checkpoint.pt")["model"]
        assert set(trained) == set(initial)
        weights = [k for k, v in initial.items()
                   if v.is_floating_point() and not k.endswith(("running_mean", "running_var"))]
        changed = [k for k in weights if not torch.equal(trained[k], initial[k])]
        assert len(changed) >= 0.9 * len(weights), f"{variant.name}: only {len(changed)}/{len(weights)} tensors changed"
        assert "fc.weight" in changed


def test_sharing_does_not_couple_variants(ablation_run):
    """The default and its twin (same config, same seed) end bit-identical; TSM differs."""
    from side4video.engine.checkpoint import load_checkpoint
    out, results = ablation_run["out"], ablation_run["results"]
    conv = load_checkpoint(out / "conv" / "checkpoint.pt")
    twin = load_checkpoint(out / "conv_twin" / "checkpoint.pt")
    assert all(torch.equal(conv["model"][k], twin["model"][k]) for k in conv["model"])
    assert conv["optimizer"][0]["state"].keys() == twin["optimizer"][0]["state"].keys()
    a, b = _row(results, "conv"), _row(results, "conv_twin")
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert a["top1"] == b["top1"] and a["saved_bytes_per_clip"] == b["saved_bytes_per_clip"]
    scores = [np.load(out / name / "scores_8x3x2.npz")["scores"] for name in ("conv", "conv_twin", "tsm")]
    assert np.array_equal(scores[0], scores[1])
    assert not np.array_equal(scores[0], scores[2])
    assert a["params"] != _row(results, "tsm")["params"]


@pytest.mark.parametrize("name", ["conv", "conv_ema"])
def test_checkpoint_scores_what_the_table_reports(ablation_run, name):
    """A variant's checkpoint loads with load_trainable_weights; test.py's evaluation (in process: the evaluator it
    calls) gives the table's top-1 and the same scores: for an EMA variant, the EMA weights it validated."""
    from side4video.data import ShardedEvalSampler, collate_eval, create_dataset, create_loader
    from side4video.engine.builders import (
        backbone_from_config,
        config_for_checkpoint,
        load_trainable_weights,
        model_from_config,
    )
    from side4video.engine.checkpoint import load_checkpoint
    from side4video.tasks.views import collect_scores
    out, results = ablation_run["out"], ablation_run["results"]
    path = out / name / "checkpoint.pt"
    saved = load_checkpoint(path)
    if name == "conv_ema":   # the EMA, once: as the evaluated weights, not again in the plugin's state
        assert saved["plugins"] == {"ema": {}} and saved["eval_model"].keys() == saved["model"].keys()
        assert not all(torch.equal(saved["eval_model"][k], saved["model"][k]) for k in saved["model"])
    else:
        assert "eval_model" not in saved
    cfg = config_for_checkpoint(path, None, [])          # the stored config, as test.py without --config
    backbone = backbone_from_config(cfg)
    model = model_from_config(cfg, backbone)
    load_trainable_weights(model, path, backbone, cfg)
    dataset = create_dataset(cfg.data, "test", test_crops=3, test_clips=2, seed=cfg.seed)
    loader = create_loader(dataset, batch_size=cfg.data.batch_size, sampler=ShardedEvalSampler(len(dataset)),
                          collate_fn=collate_eval)
    scores = collect_scores(backbone, model.eval(), loader, "cpu", mean=cfg.data.mean, std=cfg.data.std,
                            progress=False, flip_permutation=dataset.flip_permutation())
    assert scores.metrics(cfg.data.num_classes)["top1"] == _row(results, name)["top1"]
    np.testing.assert_allclose(np.load(out / name / "scores_8x3x2.npz")["scores"], scores.scores, rtol=1e-5,
                               atol=1e-6)


def test_test_py_gives_the_reported_top1(ablation_run, tmp_path):
    import json
    out, results = ablation_run["out"], ablation_run["results"]
    tested = run_clean(["test.py", "--weights", str(out / "tsm" / "checkpoint.pt"), "--test_crops", "3",
                        "--test_clips", "2", "--output", str(tmp_path / "tsm")])
    assert tested.returncode == 0, tested.stdout + tested.stderr
    metrics = json.loads((tmp_path / "tsm" / "results.json").read_text())
    assert metrics["top1"] == _row(results, "tsm")["top1"] and metrics["top5"] == _row(results, "tsm")["top5"]
    np.testing.assert_allclose(np.load(out / "tsm" / "scores_8x3x2.npz")["scores"],
                               np.load(tmp_path / "tsm" / "scores.npz")["scores"], rtol=1e-5, atol=1e-6)
    assert (out / "tsm" / "config.yaml").is_file()


def test_table_has_one_row_per_variant(ablation_run):
    text = (ablation_run["out"] / "ablation.md").read_text()
    blocks = [block.splitlines() for block in text.split("\n\n")]
    table = next(block for block in blocks if block[0].startswith("| variant") and "trainable params" in block[0])
    names = [line.split("|")[1].strip() for line in table[2:]]
    assert names == ["conv", "conv_twin", "tsm", "conv_ema"]
    header = table[0]
    for column in ("trainable params", "val top-1 (8x3x2)", "saved for backward / clip", "step time vs conv"):
        assert column in header
    conv_row = table[2]
    assert "1.00x" in conv_row and "MiB" in conv_row
    assert "shared / separate" in text and "Command: `pytest`" in text
    # the estimate of separate runs: every variant loads the data and runs the backbone (4 variants, all sharing)
    results = ablation_run["results"]
    saving = results["saving"]
    assert saving["sharing"] == results["num_variants"] == 4 and saving["backbone_ms"] > 0 and saving["load_ms"] > 0
    assert saving["steps_ms"] == pytest.approx(sum(row["step_ms"] for row in results["variants"]))
    assert saving["shared_ms"] == pytest.approx(saving["load_ms"] + saving["backbone_ms"] + saving["steps_ms"])
    assert saving["separate_ms"] == pytest.approx(4 * (saving["load_ms"] + saving["backbone_ms"]) + saving["steps_ms"])
    assert saving["ratio"] == pytest.approx(saving["shared_ms"] / saving["separate_ms"])


# -- config errors: one line, naming the problem ------------------------------------------------------------------
@pytest.mark.parametrize("variants,top,expected", [
    ([{"name": "a", "netwrk": {}}], {}, r"variant 'a': unknown key 'netwrk'; did you mean 'network'\?"),
    ([{"name": "a", "network": {"side_module": []}}], {},
     r"variant 'a': unknown config key 'network.side_module'; did you mean 'network.side_modules'\?"),
    ([{"name": "a", "network": {"side_modules": [{"type": "tsn"}]}}], {},
     r"unknown side module 'tsn'; did you mean 'tsm'"),
    ([{"name": "a", "network": {"temporal_module": "convv"}}], {}, r"variant 'a': 'network.temporal_module'"),
    ([{"name": "a", "network": {"arch": "ViT-B/16"}}], {}, r"network.arch .* share one frozen backbone"),
    ([{"name": "a", "network": {"assembler": {"type": "cluster", "clusters": 4}}}], {},
     r"train this variant with train.py"),
    ([{"name": "a", "solver": {"lr": 0.1}}], {}, r"solver.lr cannot differ between variants"),
    ([{"name": "a"}, {"name": "a"}], {}, r"variant 'a': the name is used twice"),
    ([{"name": "a b"}], {}, r"variants\[0\]: 'name' must be"),
    ([{"name": "a", "config": "nowhere.yaml"}], {}, r"variant 'a': config: file not found: nowhere.yaml"),
    ([{"name": "a"}], {"budjet": {}}, r"unknown key 'budjet'; did you mean 'budget'\?"),
    ([{"name": "a"}], {"budget": {"epochs": 0}}, r"'budget.epochs' must be a positive integer, got 0"),
    ([{"name": "a"}], {"timing": {"warmup_batchs": 1}}, r"unknown key 'timing.warmup_batchs'; did you mean "
                                                         r"'timing.warmup_batches'\?"),
    ([{"name": "a"}], {"budget": {"test_crops": 4}}, r"'budget.test_crops' must be one of 1, 3, 5, 10, got 4"),
    ([{"name": "a"}], {"timing": "fast"}, r"'timing' must be a mapping, got 'fast'"),
    ([{"name": "a", "label": ["x"]}], {}, r"variant 'a': 'label' must be a string, got \['x'\]"),
    ([{"name": "a"}], {"timing": {"check": ["b"]}}, r"timing.check names 'b', which is not a variant"),
    ([{"name": "a"}], {"reference": "b"}, r"reference 'b' is not a variant"),
    ([], {}, r"'variants' must be a non-empty list"),
])
def test_config_errors_are_one_line(base_config, tmp_path, variants, top, expected):
    from side4video.ablation import load_ablation
    config = write_ablation(tmp_path / "ablation.yaml", base_config, variants, **top)
    with pytest.raises(ConfigError) as info:
        load_ablation(config)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(expected, message), message


def test_optional_sections_may_be_empty_and_a_variant_may_be_called_none(base_config, tmp_path):
    from side4video.ablation import load_ablation
    config = write_ablation(tmp_path / "ablation.yaml", base_config, [{"name": "conv"}, {"name": "none"}],
                            timing={"check": None}, budget=None, reference="none")
    spec = load_ablation(config)
    assert spec.check == [] and spec.reference == "none" and spec.test_crops == 3 and spec.test_clips == 2


def test_variant_config_file_network_section_is_used(base_config, tmp_path):
    from side4video.ablation import describe_modules, load_ablation
    config = write_ablation(tmp_path / "ablation.yaml", base_config, [
        {"name": "gc", "config": str(REPO / "configs/toy/toy_gc.yaml")},
        {"name": "gc_t", "config": str(REPO / "configs/toy/toy_gc.yaml"),
         "network": {"side_modules": [{"type": "gc", "calibrators": "T"}]}}], budget={"epochs": 3})
    spec = load_ablation(config)
    gc, gc_t = spec.variants
    assert gc.cfg.network.temporal_module == "none" and gc.cfg.network.side_dim == 64   # from toy_gc.yaml
    assert gc.cfg.data.batch_size == 8                                                # from the base
    assert gc.cfg.solver.epochs == gc_t.cfg.solver.epochs == 3
    assert describe_modules(gc.cfg) == "gc" and describe_modules(gc_t.cfg) == "gc(calibrators=T)"
    bad = tmp_path / "bad_variant.yaml"
    bad.write_text("network:\n    side_modules: [{type: gc, calibrator: T}]\n")
    with pytest.raises(ConfigError, match=r"bad_variant.yaml \(network section\).*calibrator"):
        load_ablation(write_ablation(tmp_path / "b.yaml", base_config, [{"name": "x", "config": str(bad)}]))


def test_the_toy_ablation_lists_every_module():
    from side4video.ablation import describe_modules, load_ablation
    spec = load_ablation(REPO / "configs/toy/ablation.yaml")
    modules = {v.name: describe_modules(v.cfg) for v in spec.variants}
    assert modules["conv"] == "conv" and spec.reference == "conv"
    assert modules["none"].startswith("none")
    for expected in ("tsm", "tsm(online=True)", "gc", "gc(calibrators=T)", "h2cn", "r2plus1d", "tsm + gc"):
        assert expected in modules.values(), expected
    assert any(m.startswith("nonlocal") for m in modules.values())
    assert len({v.cfg.solver.epochs for v in spec.variants}) == 1


def test_cli_config_error_is_one_line(base_config, tmp_path):
    config = write_ablation(tmp_path / "ablation.yaml", base_config, [{"name": "a", "netwrk": {}}])
    result = run_clean(["-m", "side4video.tools.ablation", "--config", str(config)])
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("error: ") and "did you mean 'network'" in result.stderr


# -- slower end-to-end runs ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pixel_changing_plugin_gets_its_own_backbone_pass(base_config, tmp_path):
    from side4video.ablation import load_ablation, run_ablation
    from side4video.backbones.frozen import FrozenEncoder
    config = write_ablation(tmp_path / "ablation.yaml", base_config,
                            [{"name": "conv"}, {"name": "conv_mixup", "solver": {"mixup": 0.8}}])
    calls = []
    original = FrozenEncoder.tap

    def counting_tap(self, images, layers="all", embedding=True, **kwargs):
        calls.append(images.shape[0])
        return original(self, images, layers=layers, embedding=embedding, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FrozenEncoder, "tap", counting_tap)
        results = run_ablation(load_ablation(config), tmp_path / "out", check=False)
    mixup = _row(results, "conv_mixup")
    assert mixup["own_pass"] and not _row(results, "conv")["own_pass"]
    assert results["backbone_passes"]["train"] == 4 and calls.count(8) == 2 * 4   # shared + its own, per batch
    assert "own backbone pass" in (tmp_path / "out" / "ablation.md").read_text()
    assert _row(results, "conv")["history"][0]["train_loss"] != mixup["history"][0]["train_loss"]


@pytest.mark.slow
def test_cli_run_with_separate_check_matches_train_py(base_config, tmp_path):
    """The command line end to end, with the real separate-run measurement; a variant trained side by side ends
    bit-identical to train.py on its config.yaml."""
    from side4video.engine.checkpoint import load_checkpoint
    config = write_ablation(tmp_path / "ablation.yaml", base_config,
                            [{"name": "conv"}, {"name": "tsm", "network": TSM}],
                            timing={"check": ["conv", "tsm"], "check_epochs": 1, "warmup_batches": 1})
    report = tmp_path / "copy" / "ablation.md"
    result = run_clean(["-m", "side4video.tools.ablation", "--config", str(config), "--out", str(tmp_path / "out"),
                        "--report", str(report)])
    assert result.returncode == 0, result.stdout + result.stderr
    text = report.read_text()
    assert text == (tmp_path / "out" / "ablation.md").read_text()
    assert "Real measurement (conv, tsm" in text and "identical to those trained side by side: yes" in text
    trained = run_clean(["train.py", "--config", str(tmp_path / "out" / "tsm" / "config.yaml"),
                         "--output", str(tmp_path / "train_py")])
    assert trained.returncode == 0, trained.stdout + trained.stderr
    a = load_checkpoint(tmp_path / "out" / "tsm" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "train_py" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- defects of the runner (each failed before its fix) ------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b"])
def test_variant_names_are_folder_names_inside_the_output(base_config, tmp_path, name):
    from side4video.ablation import load_ablation
    with pytest.raises(ConfigError, match="a folder name inside the output folder"):
        load_ablation(write_ablation(tmp_path / "ablation.yaml", base_config, [{"name": name}]))


def test_opts_epochs_win_over_the_budget_and_say_so(base_config, tmp_path):
    from side4video.ablation import load_ablation
    config = write_ablation(tmp_path / "ablation.yaml", base_config, [{"name": "conv"}], budget={"epochs": 5})
    spec = load_ablation(config, ["solver.epochs=1"])
    assert spec.epochs == 1 and spec.variants[0].cfg.solver.epochs == 1
    assert spec.notes == ["--opts solver.epochs=1 wins over the file's budget.epochs 5"]
    assert load_ablation(config).epochs == 5


def test_a_second_ablation_on_the_same_output_is_refused(base_config, tmp_path):
    from side4video.ablation import load_ablation, run_ablation
    from side4video.files import OutputInUse, OutputLock
    spec = load_ablation(write_ablation(tmp_path / "ablation.yaml", base_config, [{"name": "conv"}]))
    with OutputLock(tmp_path / "out"):
        with pytest.raises(OutputInUse, match="in use by another"):
            run_ablation(spec, tmp_path / "out", check=False)


def test_pretrain_is_honoured_and_a_checkpoint_that_does_not_fit_names_the_variant(base_config, toy_data, tmp_path):
    """The base config's pretrain: starts every variant from its weights (as train.py on the variant's config.yaml
    would); a checkpoint for another class count is one line naming the ablation file and the variant."""
    from side4video.ablation import load_ablation
    from side4video.ablation.runner import Ablation, VariantError
    from side4video.config import load_config
    from side4video.engine.builders import backbone_from_config, model_from_config
    from side4video.engine.logging_utils import setup_logging
    from side4video.files import atomic_save
    cfg = load_config(base_config)
    torch.manual_seed(123)
    donor = model_from_config(cfg, backbone_from_config(cfg), seed=7)
    atomic_save({"model": donor.state_dict()}, tmp_path / "donor.pt")
    config = write_ablation(tmp_path / "ablation.yaml", base_config, [{"name": "conv"}])
    spec = load_ablation(config, [f"pretrain={tmp_path / 'donor.pt'}"])
    ablation = Ablation(spec, tmp_path / "out", setup_logging(None, True))
    (run,) = ablation.new_runs(["conv"])
    ours = run.model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in donor.state_dict().items()), "pretrain: was ignored"
    wrong = load_config(base_config, ["data.num_classes=10"])
    atomic_save({"model": model_from_config(wrong, backbone_from_config(wrong)).state_dict()}, tmp_path / "ten.pt")
    spec = load_ablation(config, [f"pretrain={tmp_path / 'ten.pt'}"])
    with pytest.raises(VariantError) as info:
        Ablation(spec, tmp_path / "out", setup_logging(None, True)).new_runs(["conv"])
    message = str(info.value)
    assert "\n" not in message and "variant 'conv'" in message and str(config) in message
    assert "trained for 10 classes" in message
