"""The toolkit's exception hierarchy.

Every error that a user can cause (a wrong config key, a missing file, a corrupt checkpoint, weights of another
architecture, a run that diverged) is a :class:`Side4VideoError`. The command-line entry points print those as
one line naming the file, key or line, and exit non-zero; any other exception is a bug and keeps its traceback.

The subclasses also derive from the built-in exception a caller would have caught before (``ValueError``,
``FileNotFoundError``, ``RuntimeError``), so ``except ValueError`` in user code keeps working.
"""
from __future__ import annotations


class Side4VideoError(Exception):
    """Base of every error caused by input (configs, data, weights, checkpoints), not by a bug."""


class ConfigError(Side4VideoError, ValueError):
    """A config file, key or value that cannot be used; the message names the file and key."""


class DataError(Side4VideoError, ValueError):
    """Annotation lists, label files, frames or videos that cannot be used; the message names the file/line."""


class InputNotFoundError(Side4VideoError, FileNotFoundError):
    """A file or folder the user named (config, list, weights, checkpoint, video) does not exist."""


class WeightsError(Side4VideoError, ValueError):
    """Backbone weights that cannot be read or do not fit the architecture."""


class CheckpointError(Side4VideoError, ValueError):
    """A training checkpoint that cannot be read, or that does not fit the model/config it is given to."""


class TrainingError(Side4VideoError, RuntimeError):
    """Training cannot go on (loss or weights became non-finite, output folder in use, ...)."""


__all__ = ["Side4VideoError", "ConfigError", "DataError", "InputNotFoundError", "WeightsError", "CheckpointError",
           "TrainingError"]
