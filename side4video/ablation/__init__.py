"""The ablation runner: side modules (and training plugins) compared side by side on one frozen-backbone pass per
batch, each variant on the engine's own training step. ``spec`` reads the ablation file, ``runner`` trains and tests,
``report`` writes the table."""
from .report import format_report, table_rows
from .runner import Ablation, VariantRun, run_ablation, shared_scores
from .spec import AblationSpec, VariantSpec, describe_modules, load_ablation

__all__ = ["AblationSpec", "VariantSpec", "load_ablation", "describe_modules", "Ablation", "VariantRun",
           "run_ablation", "shared_scores", "format_report", "table_rows"]
