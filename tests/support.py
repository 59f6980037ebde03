"""Test helpers shared by every test module (one import mode: ``from tests.support import ...``): tiny backbones
written in the real weight-file formats, the toy-config writer, and child-process launching."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

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
    import subprocess
    import sys
    command = [sys.executable] + args
    return subprocess.run(command, cwd=REPO, env=child_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)
