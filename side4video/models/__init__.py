"""Trainable models on frozen backbones: the Side4Video side network, the baseline heads, and their inputs."""
from . import clustering  # noqa: F401  (registers the "cluster" clip assembler)
from .assembly import ASSEMBLERS, TapAssembler, create_assembler, model_inputs, protocol_name, run_model
from .baselines import FrameAverageProbe, TemporalTransformerHead
from .factory import (
                      HEADS,
                      Recognizer,
                      clip_frames,
                      count_parameters,
                      create_model,
                      create_model_from_config,
                      model_options_from_config,
)
from .inputs import SideInputs
from .side_network import SideBlock, SideNetwork, shift_cls_in_time

__all__ = ["ASSEMBLERS", "protocol_name", "TapAssembler", "create_assembler", "model_inputs", "run_model",
           "FrameAverageProbe", "TemporalTransformerHead", "HEADS", "Recognizer", "clip_frames", "count_parameters",
           "create_model", "create_model_from_config", "model_options_from_config", "SideInputs", "SideBlock",
           "SideNetwork", "shift_cls_in_time"]
