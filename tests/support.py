"""Test helpers shared by every test module (one import mode: ``from tests.support import ...``): tiny backbones
written in the real weight-file formats, the toy-config writer, and child-process launching."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from dotmap import DotMap

from side4video.config import config_section

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "side4video" / "assets"
TINY_CLIP_JSON = ASSETS / "tiny_clip.json"
TINY_EVA_JSON = ASSETS / "tiny_eva.json"

def tiny_open_clip(config: Path = TINY_CLIP_JSON, quick_gelu: bool = False, seed: int = 0) -> torch.nn.Module:
    """A tiny open_clip model with random (seeded) weights, as a weight-file writer would have it."""
    from side4video.backbones import create_open_clip_model
    torch.manual_seed(seed)
    model = create_open_clip_model(json.loads(config.read_text()), quick_gelu=quick_gelu).eval()
    with torch.no_grad():  # make norms non-trivial so a wrongly loaded tensor shows up in outputs
        for name, param in model.named_parameters():
            if name.endswith("bias") or "ln" in name or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def write_openai_torchscript(model: torch.nn.Module, path: Path, image_size: int = 64) -> Path:
    """An archive shaped like OpenAI's ``ViT-B-16.pt``: a scripted CLIP whose state dict carries
    ``input_resolution``, ``context_length`` and ``vocab_size``."""
    import copy
    scripted_source = copy.deepcopy(model)
    del scripted_source.context_length
    del scripted_source.vocab_size
    scripted_source.register_buffer("input_resolution", torch.tensor(image_size))
    scripted_source.register_buffer("context_length", torch.tensor(77))
    scripted_source.register_buffer("vocab_size", torch.tensor(49408))
    torch.jit.script(scripted_source).save(str(path))
    return path


def to_baai_eva_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip/timm EVA keys → the BAAI EVA-CLIP checkpoint layout (``visual.blocks.N.attn.q_bias`` ...)."""
    renames = [(".attn.q_proj.bias", ".attn.q_bias"), (".attn.v_proj.bias", ".attn.v_bias"),
               (".attn.norm.", ".attn.inner_attn_ln."), (".mlp.norm.", ".mlp.ffn_ln."),
               (".mlp.fc1_g.", ".mlp.w1."), (".mlp.fc1_x.", ".mlp.w2."), (".mlp.fc2.", ".mlp.w3.")]
    out = {}
    for key, value in state_dict.items():
        if key.startswith("visual.trunk."):
            key = "visual." + key[len("visual.trunk."):]
            for old, new in renames:
                key = key.replace(old, new)
        out[key] = value.clone()
    # BAAI checkpoints also store their rotary tables; loaders must ignore them.
    out["visual.rope.freqs_cos"] = torch.zeros(64, 32)
    out["visual.rope.freqs_sin"] = torch.zeros(64, 32)
    return out


# -- tiny training runs on the toy dataset ------------------------------------------------------------------
def toy_data_paths(data: Path) -> dict[str, str]:
    """The data section's paths for the toy dataset at ``data`` (frame folders and lists)."""
    return dict(train_root=str(data / "frames"), val_root=str(data / "frames"),
                train_list=str(data / "train_frames.txt"), val_list=str(data / "val_frames.txt"),
                label_list=str(data / "labels.csv"))


def write_toy_config(path: Path, data: Path, **overrides) -> Path:
    """configs/toy/toy_side4video.yaml pointed at ``data``, small and fast, with dotted-key ``overrides``."""
    import yaml
    cfg = yaml.safe_load((REPO / "configs/toy/toy_side4video.yaml").read_text())
    cfg["data"].update(toy_data_paths(data), workers=0, batch_size=8)
    cfg["network"].update(pretrained=str(data / "tiny_clip.safetensors"), side_dim=32)
    cfg["solver"].update(epochs=2, lr_warmup_step=0.5)
    cfg["logging"].update(progress=False, tensorboard=False)
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_toy_retrieval_config(root: Path, *, train_videos: int, epochs: int, name: str = "cfg.yaml",
                               **overrides) -> tuple[Path, dict]:
    """A small toy retrieval dataset under ``root`` (frame folders, 64 test videos) and
    configs/toy/toy_retrieval_msrvtt.yaml pointed at it: the first ``train_videos`` training videos (3 captions
    each), 4 frames, side width 32, ``epochs`` epochs, dotted-key ``overrides`` (``"solver.lr": 0.1``) on top,
    written as ``root / name``. Returns the config's path and the dataset's paths (a second call on the same
    ``root`` reuses the dataset: configs for several runs share it)."""
    import yaml

    from side4video.retrieval.toy import generate_toy_retrieval
    info = generate_toy_retrieval(root, train_per_pair=1, frames=8, formats=["frames"], workers=1)
    train_csv = root / f"train{train_videos}.csv"
    lines = (root / "msrvtt_data" / "MSRVTT_train.9k.csv").read_text().splitlines()
    train_csv.write_text("\n".join(lines[:train_videos + 1]) + "\n")          # the header + train_videos videos
    cfg = yaml.safe_load((REPO / "configs/toy/toy_retrieval_msrvtt.yaml").read_text())
    cfg["data"].update(train_csv=str(train_csv), val_csv=info["val_csv"], data_path=info["data_path"],
                       features_path=info["frames"], image_tmpl="{:05d}.jpg", max_frames=4, workers=0)
    cfg["network"].update(pretrained=info["weights"], side_dim=32)
    cfg["solver"].update(epochs=epochs, lr_warmup_step=0.5)
    cfg["logging"].update(progress=False, tensorboard=False)
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    path = root / name
    path.write_text(yaml.safe_dump(cfg))
    return path, info


# An in-process train/test run (setup_distributed) leaves these in os.environ with its port still bound for the
# rest of the session: a child process that inherited them would try to listen on that port again.
DISTRIBUTED_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env(**extra: str | None) -> dict:
    """The environment for a child process: this one without the process-group variables, on the CPU; ``extra``
    sets variables (None: removes one, e.g. to see a command's console as a user's shell gives it)."""
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARS}
    env.update(PYTHONUNBUFFERED="1", DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_script(args: list[str], env: dict | None = None, timeout: int = 600):
    """Run a repository script (train.py, test.py, torchrun ...) in a subprocess; returns CompletedProcess."""
    command = [sys.executable] + args
    return subprocess.run(command, cwd=REPO, env=child_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)


# -- data: coded frames, lists and validated data sections --------------------------------------------------
PNG_TMPL = "{:05d}.png"  # lossless frames: tests can read exact pixel values back


def coded_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames [F, H, W, 3] whose pixels say where they come from: R = 4x, G = 10 * frame index, B = 4y."""
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    frames[..., 0] = (4 * x) % 256
    frames[..., 2] = (4 * y) % 256
    frames[..., 1] = (10 * np.arange(num_frames) % 256)[:, None, None]
    return frames


def write_list(path, lines) -> str:
    with open(path, "w") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return str(path)


def make_data_cfg(**overrides) -> DotMap:
    """A validated data section (schema defaults + these values); grayscale off unless a test asks for it."""
    cfg = dict(num_classes=3, num_segments=4, input_size=32, scale_size=40, image_tmpl=PNG_TMPL,
               train_crop="random_resized", flip=True, max_retries=3, grayscale=0.0)
    cfg.update(overrides)
    return config_section("data", cfg)


def override(cfg: DotMap, **changes) -> DotMap:
    """A validated copy of ``cfg`` with some keys changed."""
    return config_section("data", {**cfg.toDict(), **changes})


# -- the tools' shared workspace (built once per session) ---------------------------------------------------
_BUILT: dict[str, "Workspace"] = {}


@dataclass
class Workspace:
    root: Path
    toy: dict            # generate_toy_dataset's paths
    config: Path         # YAML config (tiny CLIP, toy data, workers 0)
    weights: Path        # backbone weights, text tower included
    checkpoint: Path     # trainable side network, engine checkpoint format

    def load_config(self, *opts: str):
        from side4video.config import load_config
        return load_config(str(self.config), list(opts))


def _write_config(path: Path, toy: dict, weights: Path) -> None:
    path.write_text(f"""seed: 1024
data:
    dataset: toy
    num_segments: 8
    seg_length: 1
    batch_size: 4
    workers: 0
    num_classes: 8
    image_tmpl: '{{:05d}}.jpg'
    train_root: {toy['frames_root']}
    train_list: {toy['train_frames_list']}
    val_root: {toy['frames_root']}
    val_list: {toy['val_frames_list']}
    label_list: {toy['label_list']}
    input_size: 64
    scale_size: [64, 80]
network:
    arch: {TINY_CLIP_JSON}
    pretrained: {weights}
    head: side4video
    side_dim: 32
solver:
    precision: fp32
""")


def _write_checkpoint(ws_config: Path, path: Path) -> None:
    import torch

    from side4video.backbones import backbone_identity
    from side4video.config import load_config
    from side4video.engine.builders import backbone_from_config, model_from_config
    from side4video.engine.checkpoint import FORMAT
    cfg = load_config(str(ws_config))
    backbone = backbone_from_config(cfg)
    model = model_from_config(cfg, backbone, seed=0)
    # a classifier that is not near-uniform makes prediction comparisons meaningful
    classifier = [param for param in model.parameters() if param.dim() == 2][-1]
    with torch.no_grad():
        classifier.mul_(20)
    torch.save({"format": FORMAT, "epoch": 0, "model": model.state_dict(), "backbone": backbone_identity(backbone),
                "head": cfg.network.head, "num_classes": cfg.data.num_classes}, path)


def build_workspace(base: Path) -> Workspace:
    """Build (once per session) everything the tool tests share."""
    if "ws" in _BUILT:
        return _BUILT["ws"]
    from side4video.backbones.tiny import make_tiny_backbone
    from side4video.data.toy import generate_toy_dataset
    base.mkdir(parents=True, exist_ok=True)
    toy = generate_toy_dataset(str(base / "toy"), train_per_class=2, val_per_class=1, frames=12,
                               formats=("frames", "videos"), workers=1)
    weights = make_tiny_backbone(TINY_CLIP_JSON, base / "tiny_clip.safetensors")
    config = base / "tiny.yaml"
    _write_config(config, toy, weights)
    checkpoint = base / "side_network.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _write_checkpoint(config, checkpoint)
    _BUILT["ws"] = Workspace(base, toy, config, weights, checkpoint)
    return _BUILT["ws"]


def run_module(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m module args`` in a fresh process (for crash/resume tests), from the repository root."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=child_env(**(env or {})),
                          capture_output=True, text=True, timeout=120)
