"""Extension without forking: a side module and a training plugin written in a user's own folder, named in a config
by ``package.module:Class``, train; argument errors are one line, bugs in a constructor keep their traceback."""
from __future__ import annotations

import textwrap
import traceback

import pytest
import torch

from side4video.backbones import describe_backbone
from side4video.config import load_config
from side4video.engine.distributed import cleanup
from side4video.engine.logging_utils import read_jsonl
from side4video.engine.trainer import Trainer
from side4video.errors import ConfigError
from side4video.models import create_model
from tests.support import REPO, toy_data_paths

USER_CODE = textwrap.dedent('''
    """A user's own parts, outside the side4video package."""
    import torch
    from torch import nn

    from side4video.modules import SideModule
    from side4video.plugins import TrainPlugin


    class ScaledGate(SideModule):
        """x * (1 + scale * tanh(w·x)) per channel: a tiny gate of the user's own."""

        def __init__(self, dim: int, *, scale: float = 1.0):
            super().__init__()
            self.scale = scale
            self.proj = nn.Linear(dim, dim)

        def forward(self, x, ctx):
            return x * (1 + self.scale * torch.tanh(self.proj(x)))


    class CenterLoss(TrainPlugin):
        """A plugin with a trainable part of its own: class centres pulled towards the logits."""

        name = "center_loss"

        def __init__(self, weight: float = 0.1):
            self.weight = weight

        def setup(self, ctx):
            self.centres = nn.Parameter(torch.zeros(ctx.num_classes, ctx.num_classes))
            holder = nn.Module()
            holder.centres = self.centres
            return holder

        def loss(self, logits, inputs, batch, model):
            return {"center": self.weight * (logits.float() - self.centres[batch.labels]).pow(2).mean()}


    class Broken(SideModule):
        def __init__(self, dim: int, *, width: int = 4):
            super().__init__()
            raise RuntimeError("a bug inside the constructor")
''')


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    folder = tmp_path / "user_repo" / "my_ext"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "parts.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path / "user_repo"))
    yield "my_ext.parts"


def test_a_users_side_module_and_plugin_train_from_a_config(user_package, toy_data, tmp_path, quiet_random_weights):
    cfg = load_config(REPO / "configs" / "toy" / "toy_side4video.yaml", {
        **{f"data.{key}": value for key, value in toy_data_paths(toy_data).items()},
        "data.workers": 0, "data.batch_size": 8, "network.pretrained": str(toy_data / "tiny_clip.safetensors"),
        "network.side_dim": 32, "network.side_modules": [{"type": f"{user_package}:ScaledGate", "scale": 0.5,
                                                          "slot": "post_mlp"}],
        "solver.plugins": [{"type": f"{user_package}:CenterLoss", "weight": 0.05}],
        "solver.epochs": 1, "logging.progress": False, "logging.tensorboard": False})
    trainer = Trainer(cfg, tmp_path / "run")
    initial: dict[str, torch.Tensor] = {}

    original = trainer._build

    def build_then_remember():
        original()
        initial.update({k: v.detach().clone() for k, v in trainer.engine.module.named_parameters()})

    trainer._build = build_then_remember
    try:
        trainer.fit()
        after = dict(trainer.engine.module.named_parameters())
        gate = [k for k in initial if ".post_mlp." in k]
        plugin = [k for k in initial if k.startswith("parts.center_loss.")]
        assert gate and plugin
        assert all(not torch.equal(initial[k], after[k]) for k in gate + plugin), "the user's parts did not train"
        assert torch.isfinite(torch.tensor(read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]["train_loss"]))
    finally:
        cleanup()


def test_a_wrong_argument_of_a_users_module_is_one_line_with_the_closest_name(user_package):
    with pytest.raises(ConfigError) as info:
        load_config(None, {"data.num_classes": 3, "network.side_modules": [{"type": f"{user_package}:ScaledGate",
                                                                              "scal": 2}]})
    assert "\n" not in str(info.value) and "has no argument 'scal'; did you mean 'scale'?" in str(info.value)
    with pytest.raises(ConfigError, match="argument 'scale' must be a number, got 'big'"):
        load_config(None, {"data.num_classes": 3, "network.side_modules": [{"type": f"{user_package}:ScaledGate",
                                                                              "scale": "big"}]})
    with pytest.raises(ConfigError, match="cannot import no_such_package"):
        load_config(None, {"data.num_classes": 3, "network.side_modules": [{"type": "no_such_package.x:Y"}]})
    with pytest.raises(ConfigError, match="has no 'ScaledGat'; did you mean 'ScaledGate'"):
        load_config(None, {"data.num_classes": 3, "network.side_modules": [{"type": f"{user_package}:ScaledGat"}]})
    with pytest.raises(ConfigError, match="is not a subclass of side4video.modules.base.SideModule"):
        load_config(None, {"data.num_classes": 3, "network.side_modules": [{"type": f"{user_package}:CenterLoss"}]})


def test_an_exception_inside_a_constructor_keeps_its_traceback(user_package):
    with pytest.raises(RuntimeError, match="a bug inside the constructor") as info:
        create_model("side4video", describe_backbone("side4video/assets/tiny_clip.json"), 3, side_dim=32,
                     side_modules=[{"type": f"{user_package}:Broken"}])
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "__init__" and frames[-1].filename.endswith("parts.py"), "the traceback is cut"
