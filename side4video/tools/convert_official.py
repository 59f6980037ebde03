"""Convert a checkpoint of the official Side4Video code into this toolkit's checkpoint format, once.

    python -m side4video.tools.convert_official CKPT --config CFG.yaml --out converted.pt [--opts KEY=VALUE ...]

``CKPT`` is what the official ``train_vision.py`` writes (``{'epoch', 'model_state_dict', 'optimizer_state_dict'}``,
``module.``-prefixed or not, CLIP or EVA). ``CFG.yaml`` is this toolkit's config for the same model (``network.arch``
and ``network.pretrained`` name the frozen backbone it was trained on, ``network.side_dim`` its side width,
``data.num_classes`` its classes). The side network is mapped onto this toolkit's names, its backbone tensors are
compared with the frozen backbone, the result is loaded into the model the config builds (so a mismatch shows
here, not later), and ``converted.pt`` is written with the trainable weights, the config and the backbone's
identity: ``test.py --weights converted.pt`` and ``tools.predict --weights converted.pt`` then need neither a
conversion nor ``--config``; ``pretrain: converted.pt`` starts a training run from it. The official optimizer
state is not carried over (``resume:`` takes this toolkit's own training checkpoints only). An official retrieval
checkpoint (``Retrieval/``'s ``pytorch_model.bin.N``) converts the same way for a config with
``task: {type: retrieval}`` (key mapping: ``side4video/retrieval/official.py``).
Key mapping and tolerances: ``side4video/models/official.py``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from ..config import to_plain_dict
from ..engine.builders import backbone_from_config, load_trainable_weights, model_from_config
from ..engine.checkpoint import load_checkpoint
from ..errors import CheckpointError
from ..files import atomic_save
from ..models import official
from ..retrieval.official import convert_official_retrieval_checkpoint, is_official_retrieval_checkpoint
from .common import add_config_arguments, load_tool_config, run_command


def convert_official(checkpoint: str | Path, cfg, out: str | Path) -> dict[str, Any]:
    """Convert ``checkpoint`` for the model ``cfg`` builds and write it to ``out``; returns what was written."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.resolve() == checkpoint.resolve():
        raise CheckpointError(f"--out {out} is the official checkpoint itself; write the conversion elsewhere")
    raw = load_checkpoint(checkpoint)
    if is_official_retrieval_checkpoint(raw):   # Retrieval/'s pytorch_model.bin.N: the model the config builds first
        backbone = backbone_from_config(cfg, "cpu")
        model = model_from_config(cfg, backbone)
        converted = convert_official_retrieval_checkpoint(raw, backbone, source=checkpoint,
                                                          text_tower=getattr(model, "text_tower", None))
        del raw
        load_trainable_weights(model, checkpoint, backbone, cfg, checkpoint=converted)
        plain = to_plain_dict(cfg)
        plain.pop("config_path", None)
        written = {**converted, "config": plain}
        atomic_save(written, out)
        return written
    if not official.is_official_checkpoint(raw):
        raise CheckpointError(f"{checkpoint} is not an official Side4Video checkpoint (no 'model_state_dict' with "
                              "visual.side_* tensors); it needs no conversion")
    backbone = backbone_from_config(cfg, "cpu")
    converted = official.convert_official_checkpoint(raw, backbone, source=checkpoint)
    del raw
    model = model_from_config(cfg, backbone)
    load_trainable_weights(model, checkpoint, backbone, cfg, checkpoint=converted)   # fits the config's model
    plain = to_plain_dict(cfg)
    plain.pop("config_path", None)
    written = {**converted, "head": cfg.network.head, "num_classes": int(cfg.data.num_classes), "config": plain}
    atomic_save(written, out)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="side4video convert",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="Key mapping and tolerances: side4video/models/official.py")
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint written by the official train_vision.py")
    add_config_arguments(parser, required=True)
    parser.add_argument("--out", required=True, help="checkpoint to write, in this toolkit's format")
    args = parser.parse_args(argv)

    def body() -> int:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        cfg = load_tool_config(args.config, args.opts)
        written = convert_official(args.checkpoint, cfg, args.out)
        details = written["official"]
        if written.get("task") == "retrieval":
            print(f"{args.checkpoint} -> {args.out}: official Side4Video retrieval checkpoint converted for "
                  f"{cfg.network.arch}")
            return 0
        print(f"{args.checkpoint} -> {args.out}: {details['family'].upper()} side network, width "
              f"{details['side_dim']}, {details['num_blocks']} blocks, {details['num_classes']} classes, "
              f"{details['backbone_tensors_compared']} backbone tensors checked against {cfg.network.arch}")
        return 0

    return run_command(body, code=2)


if __name__ == "__main__":
    sys.exit(main())
