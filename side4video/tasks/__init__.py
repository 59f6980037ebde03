"""Tasks: what is specific to classification (and, next, text–video retrieval) behind one small interface.

To add a task: write ``tasks/<name>.py`` with a :class:`Task` subclass registered by ``@TASKS.register("<name>")``
and import it below (one line).
"""
from ..errors import ConfigError
from . import (
    classification,  # noqa: F401  (registers "classification")
    retrieval,  # noqa: F401  (registers "retrieval")
)
from .base import TASKS, Evaluation, Task, TrainBatch
from .classification import ClassificationTask, classification_loss
from .views import ScoreSet, aggregate_views, autocast_context, collect_scores, forward_views, score_views


def create_task(cfg) -> Task:
    """The config's task (``task: {type: classification}`` by default), given what the config says about it."""
    return TASKS.build(dict(cfg.task), provided={"num_classes": int(cfg.data.num_classes or 0),
                                                 "smoothing": float(cfg.solver.smoothing)})


def require_classification(cfg, command: str, instead: str) -> Task:
    """The config's task when it is classification; else a one-line :class:`ConfigError` naming the task and
    ``instead`` (what to use for it). For the commands built on the recognition model and its class scores (export,
    feature extraction, the ablation runner): called before any heavy work, so a retrieval config or checkpoint
    stops at once instead of deep inside on a missing ``data.num_classes`` or an unexpected model."""
    task = create_task(cfg)
    if not isinstance(task, ClassificationTask):
        raise ConfigError(f"{command} supports the classification task only, got task '{task.name}'; {instead}")
    return task


__all__ = ["TASKS", "Task", "TrainBatch", "Evaluation", "ClassificationTask", "classification_loss", "create_task",
           "require_classification", "ScoreSet", "aggregate_views", "autocast_context", "collect_scores",
           "forward_views", "score_views"]
