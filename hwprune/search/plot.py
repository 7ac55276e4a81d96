"""The Pareto plot: predicted accuracy loss (and loss increase) against cycles for the exact
front, the greedy front and every uniform pattern."""

from __future__ import annotations

import os
from pathlib import Path

from ..io import write_with
from .solve import ParetoFront, ParetoPoint

__all__ = ["plot_pareto"]


def plot_pareto(front: ParetoFront, path: str | os.PathLike, *, title: str | None = None,
                force: bool = False) -> Path:
    """Draw ``front`` to a PNG (matplotlib, headless Agg), written atomically.

    Left: predicted accuracy loss in points (summed one-shot drops), when the sensitivities
    were measured; right: predicted validation-loss increase.  Both fronts minimise the
    objective the search used (``front.objective``), so on the other panel the greedy plan can
    occasionally look better than the exact one.
    """
    from matplotlib.figure import Figure

    points = [*front.exact, *front.greedy, *front.uniform]
    panels = [("accuracy", "predicted accuracy loss (pt)", lambda p: -100.0 * p.accuracy)] \
        if all(p.accuracy is not None for p in points) else []
    panels.append(("loss", "predicted val-loss increase (nats)", lambda p: p.loss))
    fig = Figure(figsize=(6.2 * len(panels), 4.6), dpi=110)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (_, ylabel, y) in zip(axes, panels):
        for series, style, label in (
                (front.exact, {"color": "C0", "marker": "o", "lw": 2}, "exact (MILP)"),
                (front.greedy, {"color": "C1", "marker": "s", "ms": 4, "lw": 1.2, "ls": "--"}, "greedy (NetAdapt-style)")):
            pts: list[ParetoPoint] = sorted(series, key=lambda p: p.cycles)
            # a step: with c cycles to spend, the best plan is the last one at or below c
            ax.step([p.cycles for p in pts], [y(p) for p in pts], where="post", label=label, **style)
        for p in front.uniform:
            ax.scatter([p.cycles], [y(p)], color="C3", marker="x", zorder=3)
            ax.annotate(p.method.removeprefix("uniform "), (p.cycles, y(p)), fontsize=7,
                        xytext=(3, 3), textcoords="offset points", color="C3")
        ax.scatter([], [], color="C3", marker="x", label="uniform pattern")
        ax.axvline(front.reference_cycles, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(f"predicted cycles on {front.array}")
        ax.set_ylabel(ylabel)
        ax.set_yscale("symlog", linthresh=1.0 if ylabel.endswith("(pt)") else 0.01)
        ax.set_ylim(bottom=min(0.0, *(y(p) for p in points)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title=f"fronts minimise summed {front.objective}", title_fontsize=8)
    fig.suptitle(title or f"hardware-aware search on {front.array}")
    fig.tight_layout()
    return write_with(path, lambda tmp: fig.savefig(tmp, format="png"), force=force)
