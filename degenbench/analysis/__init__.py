"""Analysis of finished runs: one tidy runs DataFrame (local store or W&B), comparison tables with
paired statistics, paper figures, and a per-document drill-down. `degenbench-report` makes them all."""
from degenbench.analysis import figures
from degenbench.analysis.runs import COLUMNS, load_predictions, load_runs, load_training, load_wandb
from degenbench.analysis.tables import (beta_sweep, choose_beta, comparisons, cost, pair_stats, reductions,
                                        relative_reduction, stage_table)

__all__ = ["COLUMNS", "figures", "beta_sweep", "choose_beta", "comparisons", "cost", "load_predictions", "load_runs", "load_training",
           "load_wandb", "pair_stats", "reductions", "relative_reduction", "stage_table"]
