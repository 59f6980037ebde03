"""Trainable models on frozen backbones: the Side4Video side network and the baseline heads."""
from .baselines import FrameAverageProbe, TemporalTransformerHead
from .factory import (HEADS, Recognizer, count_parameters, create_model, create_model_from_config,
                      model_options_from_config)
from .side_network import SideBlock, SideNetwork, shift_cls_in_time

__all__ = ["FrameAverageProbe", "TemporalTransformerHead", "HEADS", "Recognizer", "count_parameters", "create_model",
           "create_model_from_config", "model_options_from_config", "SideBlock", "SideNetwork", "shift_cls_in_time"]
