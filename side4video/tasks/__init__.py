"""Tasks: what is specific to classification (and, next, text–video retrieval) behind one small interface.

To add a task: write ``tasks/<name>.py`` with a :class:`Task` subclass registered by ``@TASKS.register("<name>")``
and import it below (one line).
"""
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


__all__ = ["TASKS", "Task", "TrainBatch", "Evaluation", "ClassificationTask", "classification_loss", "create_task",
           "ScoreSet", "aggregate_views", "autocast_context", "collect_scores", "forward_views", "score_views"]
