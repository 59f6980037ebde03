"""``side4video export``: clip graphs (ONNX and pt2) of tiny CLIP and EVA side networks equal to the eager model,
the stream graph over 20 pushed frames, the one-line errors (above tolerance, onnx missing), the TorchScript
fallback, and model.json."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from side4video.backbones import backbone_identity
from side4video.backbones.tiny import make_tiny_backbone
from side4video.config import load_config, to_plain_dict
from side4video.engine.builders import backbone_from_config, model_from_config
from side4video.engine.checkpoint import FORMAT
from side4video.export import GraphSpec, export_checkpoint, load_runner, stream_spec_for_step, write_and_validate
from side4video.export import api as export_api
from side4video.tools.export import main
from tests.support import TINY_CLIP_JSON, TINY_EVA_JSON

CLASSES = ["wave", "clap", "jump", "sit, then stand"]
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def two_layer_config(source: Path, out: Path) -> Path:
    """The shipped tiny config with 1 layer instead of 4: a quarter of the graph to trace, the same code paths."""
    config = json.loads(source.read_text())
    vision = config["vision_cfg"]
    if "timm_model_kwargs" in vision:
        vision["timm_model_kwargs"]["depth"] = 1
    else:
        vision["layers"] = 1
    out.write_text(json.dumps(config))
    return out


def write_checkpoint(root: Path, source: Path, *, causal: bool = False) -> Path:
    """A side network trained 0 steps on a 1-layer tiny backbone, its config stored (classifier scaled: logits ~1)."""
    root.mkdir(parents=True, exist_ok=True)
    arch = two_layer_config(source, root / source.name)
    weights = make_tiny_backbone(arch, root / f"{arch.stem}.safetensors")
    labels = root / "labels.csv"
    labels.write_text("id,name\n" + "".join(f'{i},"{name}"\n' for i, name in enumerate(CLASSES)))
    config = root / "config.yaml"
    config.write_text(f"""data:
    num_segments: 3
    num_classes: {len(CLASSES)}
    label_list: {labels}
    input_size: 64
network:
    arch: {arch}
    pretrained: {weights}
    head: side4video
    side_dim: 32
    side_layers: all
    causal: {str(causal).lower()}
""")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(str(config))
        backbone = backbone_from_config(cfg)
        model = model_from_config(cfg, backbone, seed=0)
    with torch.no_grad():
        model.fc.weight.mul_(50)
    path = root / "checkpoint.pt"
    torch.save({"format": FORMAT, "epoch": 0, "model": model.state_dict(), "backbone": backbone_identity(backbone),
                "head": "side4video", "num_classes": len(CLASSES), "config": to_plain_dict(cfg)}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    return {"clip": write_checkpoint(root / "clip", TINY_CLIP_JSON),
            "eva": write_checkpoint(root / "eva", TINY_EVA_JSON),
            "causal": write_checkpoint(root / "causal", TINY_CLIP_JSON, causal=True)}


def onnx_interface(path: Path) -> tuple[list[tuple[str, list]], list[tuple[str, list]]]:
    """``([(input name, shape)], [(output name, shape)])`` as the ONNX file declares them (named axes as names)."""
    import onnx  # deferred: optional dependency

    def shape(value) -> list:
        return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
    graph = onnx.load(str(path), load_external_data=False).graph
    return [(v.name, shape(v)) for v in graph.input], [(v.name, shape(v)) for v in graph.output]


def eager_logits(checkpoint: Path, frames: torch.Tensor) -> torch.Tensor:
    from side4video.engine.builders import load_for_inference
    from side4video.models.assembly import run_model
    _, backbone, model = load_for_inference(checkpoint)
    with torch.no_grad():
        return run_model(backbone, model, frames)


@pytest.mark.parametrize("family", ["clip", "eva"])
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_clip_graph_equals_eager(checkpoints, tmp_path, capsys, family, fmt):
    """`side4video export --mode clip`: frames [B, T, 3, H, W] → logits [B, C], backbone + side network + head in one
    graph, equal to the eager model within 1e-4 at any batch; model.json describes it."""
    out = tmp_path / "out"
    assert main(["--weights", str(checkpoints[family]), "--format", fmt, "--mode", "clip", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max |exported - eager| = " in printed
    meta = json.loads((out / "model.json").read_text())
    assert meta["exporter"] == ("dynamo" if fmt == "onnx" else "torch.export")
    assert meta["inputs"] == [{"name": "frames", "shape": ["batch", 3, 3, 64, 64], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "logits", "shape": ["batch", len(CLASSES)], "dtype": "float32"}]
    assert meta["class_names"] == CLASSES and meta["frames_per_window"] == 3 and meta["input_size"] == 64
    assert meta["validation"]["max_abs_difference"] <= 1e-4 < meta["validation"]["max_abs_eager_output"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*meta["files"], "model.json"])   # no staging left
    if fmt == "pt2":
        return      # (validation ran the loaded program at batch 2 and 1; loading it again takes seconds)
    assert onnx_interface(out / "model.onnx") == ([("frames", ["batch", 3, 3, 64, 64])],
                                                  [("logits", ["batch", len(CLASSES)])])
    # the written file, run again here on a batch of 3 (the batch axis is dynamic)
    frames = torch.randn(3, 3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    exported = load_runner(fmt, out / meta["file"])([frames])[0]
    assert exported.shape == (3, len(CLASSES))
    torch.testing.assert_close(exported, eager_logits(checkpoints[family], frames), atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_stream_graph_equals_eager_over_20_frames(checkpoints, tmp_path, fmt):
    """`--mode stream`: frame + state → scores + new state; 20 pushed frames, each step's scores within 1e-4 of the
    eager StreamStep's; model.json names the state (zeros at the start and on reset)."""
    from side4video.engine.builders import load_for_inference
    from side4video.streaming.step import create_stream_step
    result = export_checkpoint(checkpoints["causal"], tmp_path, fmt=fmt, mode="stream")
    meta = result.metadata
    assert result.max_difference <= 1e-4 and "20 random normalised frames" in meta["validation"]["inputs"]
    cfg, backbone, model = load_for_inference(checkpoints["causal"])
    step = create_stream_step(cfg, backbone, model)
    assert meta["state"]["names"] == step.state_names and meta["initial_state_all_zero"]
    assert [i["name"] for i in meta["inputs"]] == ["frame", *step.state_names]
    assert [o["name"] for o in meta["outputs"]] == ["scores", *(f"new_{n}" for n in step.state_names)]
    assert meta["state"]["initial"] == "zeros" and meta["mode"] == "stream"
    if fmt == "pt2":
        return      # (validation pushed the 20 frames through the loaded program; loading it again takes seconds)
    inputs, outputs = onnx_interface(result.path)
    assert [name for name, _ in inputs] == ["frame", *step.state_names]
    assert [name for name, _ in outputs] == ["scores", *(f"new_{n}" for n in step.state_names)]
    assert [shape for _, shape in inputs[1:]] == [list(t.shape) for t in step.initial_state()]
    # the written file, carried through its own state from zeros, against the eager step
    run = load_runner(fmt, result.path)
    state, eager_state = step.initial_state(), step.initial_state()
    for index in range(5):
        frame = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(index))
        scores, *state = run([frame, *state])
        with torch.no_grad():
            expected, *eager_state = step(frame, *eager_state)
        torch.testing.assert_close(scores, expected, atol=1e-4, rtol=0)


class ToyStep(nn.Module):
    """A StreamStep-shaped toy: a running sum of pooled frames as the state."""
    state_names = ["total", "count"]

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def initial_state(self) -> list[torch.Tensor]:
        return [torch.zeros(1, 3), torch.zeros(1, 1)]

    def forward(self, frame, total, count):
        total = total + frame.mean(dim=(2, 3))
        count = count + 1
        return self.fc(total / count), total, count


def toy_spec() -> GraphSpec:
    torch.manual_seed(0)
    return stream_spec_for_step(ToyStep(), input_size=8)


def test_above_tolerance_is_one_line_and_writes_nothing(checkpoints, tmp_path, capsys, monkeypatch):
    """An exported graph whose outputs differ from eager by more than --tolerance: exit status 1, one line with the
    difference and the tolerance, nothing in --out."""
    monkeypatch.setattr(export_api, "clip_spec", lambda *args, **kwargs: toy_spec())   # a fast graph to export
    real_runner = export_api.load_runner

    def perturbed(fmt, path, threads=None):
        run = real_runner(fmt, path, threads)
        return lambda inputs: tuple(t + 1e-3 if i == 0 else t for i, t in enumerate(run(inputs)))
    monkeypatch.setattr(export_api, "load_runner", perturbed)
    out = tmp_path / "out"
    assert main(["--weights", str(checkpoints["clip"]), "--format", "pt2", "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: the exported stream graph (pt2, torch.export exporter) differs from the eager "
                            "model: max |difference| 0.001 > tolerance 0.0001")
    assert not out.exists()


def test_missing_onnx_is_one_line(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)      # import onnxruntime → ImportError
    assert main(["--weights", str(checkpoints["clip"]), "--format", "onnx", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: --format onnx needs onnxruntime, which are not installed: pip install 'side4video[export]'"
    assert not (tmp_path / "o").exists()


def test_torchscript_exporter_is_the_fallback(tmp_path, monkeypatch):
    """When the dynamo exporter fails, the TorchScript exporter writes the file; model.json says which and why."""
    real_export = torch.onnx.export

    def dynamo_fails(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("unsupported operator aten::toy\nmore detail")
        return real_export(*args, dynamo=False, **kwargs)
    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    result = write_and_validate(toy_spec(), "onnx", tmp_path, mean=MEAN, std=STD, metadata={"note": "toy"})
    meta = json.loads(result.metadata_path.read_text())
    assert meta["exporter"] == "torchscript" and meta["dynamo_error"] == "RuntimeError: unsupported operator aten::toy"
    assert meta["note"] == "toy" and meta["state"]["names"] == ["total", "count"]
    assert result.max_difference <= 1e-6


def test_what_cannot_be_exported_is_one_line(checkpoints, tmp_path, capsys):
    """A full-video assembler (more frames than T become the model's inputs) is not a clip graph; a model that
    looks at later frames has no stream graph. One line each, exit status 1, nothing written."""
    out = tmp_path / "out"
    assert main(["--weights", str(checkpoints["clip"]), "--format", "pt2", "--out", str(out),
                 "--opts", "network.assembler={type: cluster, clusters: 3}"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: network.assembler: cluster cannot be exported (only the default tap assembler")
    assert main(["--weights", str(checkpoints["clip"]), "--format", "pt2", "--mode", "stream", "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: streaming needs a causal side network")
    assert not out.exists()
