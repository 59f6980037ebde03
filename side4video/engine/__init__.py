"""Training, evaluation, checkpoints and the distributed plumbing they share."""
from .evaluator import ScoreSet, aggregate_views, collect_scores, forward_views
from .metrics import summarize, topk_accuracy

__all__ = ["ScoreSet", "aggregate_views", "collect_scores", "forward_views", "summarize", "topk_accuracy"]
