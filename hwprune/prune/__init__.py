"""Pruning: importance criteria × sparsity patterns × scope × schedule, with fine-tuning.

Criteria (:mod:`.criteria`) score every weight of a layer as an N×K matrix; patterns
(:mod:`hwprune.patterns`) turn scores into masks; :class:`.method.PatternPruning` applies them
through ``torch.nn.utils.prune``; schedules (:mod:`.schedules`) decide when; plans (:mod:`.plan`)
give each layer its own pattern; :func:`.shrink.shrink_channels` removes pruned channels.

:func:`.engine.prune_model` prunes and fine-tunes on any workload (a built-in task or a user's
``hwprune.Workload`` of DataLoaders, loss and metric); :class:`.gradual.GradualPruner` prunes
inside the user's own training loop (``pruner.step()`` after each optimizer step).  Pruning
composes: a second pattern only removes weights (new mask = old AND new).
"""

from .criteria import (CRITERIA, Criterion, LayerContext, LayerStats, criterion_names, get_criterion,
                       register_criterion)
from .engine import (SCOPES, PruneResult, Target, apply_masks, apply_patterns, collect_stats,
                     compute_scores, current_masks, global_patterns, layer_graph, make_permanent,
                     mask_dead_row_followers, mask_dead_rows, per_sample_grad_sq,
                     compose_patterns, prunable_layers, prune_model, rescore_steps,
                     RESCORE_STEPS)
from .gradual import GradualPruner
from .method import PatternPruning, as_matrix, layer_mask, pattern_prune
from .plan import PruningPlan, load_plan, plan_from_dict, save_plan
from .schedules import SCHEDULES, agp_sparsity, at_fraction, iterative_fractions
from .shrink import removed_channels, shrink_channels

__all__ = [
    "CRITERIA", "Criterion", "LayerContext", "LayerStats", "criterion_names", "get_criterion",
    "register_criterion",
    "SCOPES", "PruneResult", "Target", "apply_masks", "apply_patterns", "collect_stats",
    "compute_scores", "current_masks", "global_patterns", "layer_graph", "make_permanent",
    "mask_dead_row_followers", "mask_dead_rows", "per_sample_grad_sq", "compose_patterns",
    "prunable_layers", "prune_model", "rescore_steps", "RESCORE_STEPS",
    "GradualPruner", "PatternPruning", "as_matrix", "layer_mask", "pattern_prune",
    "PruningPlan", "load_plan", "plan_from_dict", "save_plan",
    "SCHEDULES", "agp_sparsity", "at_fraction", "iterative_fractions",
    "removed_channels", "shrink_channels",
]
