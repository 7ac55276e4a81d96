"""Answers from a sweep: Pareto fronts, plots and a one-line recommendation per model and budget.

A point (design × pattern) of one model is on the front when no other point of that model is at
least as good on every objective and better on one.  Objectives: fewer cells (silicon: yosys
cells of the generated RTL; the point is left out when area was not run), fewer cycles, less
energy, and higher accuracy (only when the model has one; patterns without it are compared on
the hardware objectives alone).

A recommendation answers "what should I build for this model with at most B cells": among the
front points within the cell budget whose accuracy is within ``max_drop`` of the dense model's,
the one with the fewest cycles (then the least energy).  Budgets default to the quartiles of the
swept designs' cells.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import write_text, write_with

__all__ = ["OBJECTIVES", "pareto_mask", "fronts", "recommend", "write_answers"]

#: (column, sense): +1 minimise, −1 maximise
OBJECTIVES = (("cells", 1), ("cycles", 1), ("energy_pj", 1), ("accuracy", -1))


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Non-dominated rows of ``values`` (n × k, every column minimised); duplicates all kept."""
    v = np.asarray(values, dtype=float)
    keep = np.ones(len(v), dtype=bool)
    for i in range(len(v)):
        if not keep[i]:
            continue
        dominated = np.all(v[i] <= v, axis=1) & np.any(v[i] < v, axis=1)
        keep &= ~dominated
    return keep


def _objective_matrix(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    cols = [(c, s) for c, s in OBJECTIVES if all(r.get(c) is not None for r in rows)]
    return np.array([[s * r[c] for c, s in cols] for r in rows], dtype=float), [c for c, _ in cols]


def fronts(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per model, its rows with ``on_front`` set (rows that could not run are left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for model in sorted({r["model"] for r in rows}):
        mine = [dict(r) for r in rows if r["model"] == model and r["ok"]]
        if not mine:
            out[model] = []
            continue
        values, _ = _objective_matrix(mine)
        for r, on in zip(mine, pareto_mask(values)):
            r["on_front"] = bool(on)
        out[model] = mine
    return out


def recommend(model_rows: Sequence[dict[str, Any]], budgets: Sequence[float] | None = None,
              max_drop: float = 0.01) -> list[dict[str, Any]]:
    """One recommendation per cell budget (module docstring); ``design`` None when none fits."""
    front = [r for r in model_rows if r.get("on_front")]
    cells = sorted({r["cells"] for r in model_rows if r.get("cells") is not None})
    if budgets is None:
        budgets = sorted({float(np.quantile(cells, q)) for q in (0.25, 0.5, 1.0)}) if cells else [float("inf")]
    recs = []
    for b in budgets:
        fit = [r for r in front if (r.get("cells") is None or r["cells"] <= b)
               and (r.get("accuracy") is None or r.get("dense_accuracy") is None
                    or r["accuracy"] >= r["dense_accuracy"] - max_drop)]
        best = min(fit, key=lambda r: (r["cycles"], r["energy_pj"]), default=None)
        recs.append({"budget_cells": b, "point": best and best["point"], "line": _line(model_rows, b, best)})
    return recs


def _line(rows: Sequence[dict[str, Any]], budget: float, r: dict[str, Any] | None) -> str:
    model = rows[0]["model"] if rows else "?"
    limit = "any area" if budget == float("inf") else f"≤ {budget:,.0f} cells"
    if r is None:
        return f"{model}, {limit}: no design on the front fits"
    acc = "" if r.get("accuracy") is None else f", accuracy {100 * r['accuracy']:.2f} %"
    area = "" if r.get("cells") is None else f", {r['cells']:,} cells"
    clock = "" if r.get("fmax_mhz") is None else f", iCE40 fmax ≈ {r['fmax_mhz']:.0f} MHz"
    return (f"{model}, {limit}: build {r['name']} and run {r['pattern']} — {r['cycles']:,} cycles, "
            f"{r['energy_pj'] / 1e6:,.2f} µJ{area}{clock}{acc}")


def write_answers(out: str | Path, rows: Sequence[dict[str, Any]], *, budgets: Sequence[float] | None = None,
                  max_drop: float = 0.01, plots: bool = True) -> dict[str, Any]:
    """``fronts.csv`` (every point, ``on_front`` flag), ``fronts.json`` (fronts and
    recommendations) and ``plots/*.png`` under ``out``; returns the JSON summary."""
    out = Path(out)
    by_model = fronts(rows)
    summary: dict[str, Any] = {"objectives": [c for c, _ in OBJECTIVES], "models": {}}
    flat = []
    for model, mine in by_model.items():
        front = [r for r in mine if r["on_front"]]
        recs = recommend(mine, budgets, max_drop)
        summary["models"][model] = {"points": len(mine), "front_size": len(front),
                                    "front": [r["point"] for r in front], "recommendations": recs}
        flat.extend(mine)
    _write_csv(out / "fronts.csv", flat)
    write_text(out / "fronts.json", json.dumps(summary, indent=1, default=str) + "\n", force=True)
    if plots:
        for model, mine in by_model.items():
            if mine:
                _plot(out / "plots", model, mine)
    return summary


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import csv
    import io
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_text(path, buf.getvalue(), force=True)


def _plot(folder: Path, model: str, rows: Sequence[dict[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    x_key = "cells" if all(r.get("cells") is not None for r in rows) else "memory_bits"
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    groups = sorted({(r["dataflow"], r["n_set"]) for r in rows})
    for df, ns in groups:
        pts = [r for r in rows if (r["dataflow"], r["n_set"]) == (df, ns)]
        label = f"{df} N∈{{{ns}}}" if df == "os" else f"{df} (dense)"
        ax.scatter([r[x_key] for r in pts], [r["cycles"] for r in pts], s=10, alpha=0.5, label=label)
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r[x_key])
    ax.scatter([r[x_key] for r in front], [r["cycles"] for r in front], s=40, facecolors="none",
               edgecolors="black", label="Pareto front")
    ax.set(xscale="log", yscale="log", xlabel=x_key.replace("_", " "), ylabel="cycles",
           title=f"{model}: cycles vs {x_key.replace('_', ' ')} (colour: N:M support)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_with(folder / f"{model}_cycles_vs_{x_key}.png", lambda p: fig.savefig(p, format="png", dpi=110), force=True)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    have_acc = any(r.get("accuracy") is not None for r in rows)
    y_key = "accuracy" if have_acc else "cycles"
    for pattern in sorted({r["pattern"] for r in rows}):
        pts = [r for r in rows if r["pattern"] == pattern and r.get(y_key) is not None]
        ax.scatter([r["energy_pj"] / 1e6 for r in pts], [r[y_key] for r in pts], s=10, alpha=0.5, label=pattern)
    ax.set(xscale="log", xlabel="energy (µJ)", ylabel=y_key,
           title=f"{model}: energy vs {y_key}" + ("" if have_acc else " (no accuracy: not a built-in task)"))
    if not have_acc:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_with(folder / f"{model}_energy_vs_{y_key}.png", lambda p: fig.savefig(p, format="png", dpi=110), force=True)
    plt.close(fig)
