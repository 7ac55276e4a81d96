"""The report's figures: each a small pure function of a part of ``summary.json`` → SVG text.

matplotlib's Agg/SVG back end draws them headless; the SVG hash salt and the file date are fixed
so that the same summary always gives the same bytes (``hwprune report DIR`` rebuilds the page
exactly).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "accuracy_by_stage",
    "block_diagram",
    "energy_breakdown",
    "layer_cycles",
    "mask_picture",
    "pack_mask",
    "pareto_front",
    "svg_of",
    "unpack_mask",
    "utilisation",
]

#: colours used throughout the page (dense is grey, the plan is blue)
DENSE, PLAN = "#9aa0a6", "#1f6fb2"
PARTS = {"compute_cycles": "#1f6fb2", "fill_cycles": "#f0a030", "stall_cycles": "#d0453a"}
ENERGY = {"mac": "#1f6fb2", "mux": "#6fa8dc", "pe_registers": "#93c47d", "sram": "#f0a030",
          "dram": "#d0453a"}


def svg_of(draw: Callable[[Any], None], *, size: tuple[float, float] = (7.0, 3.2)) -> str:
    """Run ``draw(fig)`` on a new Agg figure and return it as deterministic SVG text."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.hashsalt": "hwprune", "svg.fonttype": "path",
                                "font.size": 9, "axes.spines.top": False,
                                "axes.spines.right": False}):
        fig = Figure(figsize=size, layout="constrained")
        draw(fig)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def pack_mask(mask: np.ndarray) -> dict[str, Any]:
    """A boolean N×K mask as JSON: shape plus base64 of ``np.packbits`` (row-major)."""
    m = np.asarray(mask, dtype=bool)
    return {"shape": list(m.shape), "bits": base64.b64encode(np.packbits(m.ravel())).decode()}


def unpack_mask(data: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`pack_mask`."""
    shape = tuple(int(s) for s in data["shape"])
    flat = np.unpackbits(np.frombuffer(base64.b64decode(data["bits"]), dtype=np.uint8))
    return flat[: int(np.prod(shape))].reshape(shape).astype(bool)


def block_diagram(array: Mapping[str, Any], slots: Sequence[int]) -> str:
    """The array as a hardware engineer draws it: R×C PEs, weight SRAM north (value, index
    pairs streaming south), activation SRAM west (M-wide windows streaming east), outputs
    drained to the output SRAM, the controller walking the schedule."""
    from matplotlib.patches import FancyArrowPatch, Rectangle

    rows, cols = int(array["rows"]), int(array["cols"])
    m = int(array["sparsity"]["m"])
    mem = array["memory"]
    bits = array["bits"]

    def draw(fig):
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_aspect("equal")
        gx, gy, cell = 3.0, 0.6, 5.6 / max(rows, cols)
        w, h = cols * cell, rows * cell
        for r in range(rows):
            for c in range(cols):
                ax.add_patch(Rectangle((gx + c * cell + 0.06 * cell, gy + (rows - 1 - r) * cell + 0.06 * cell),
                                       0.88 * cell, 0.88 * cell, fc="#dbe8f6", ec=PLAN, lw=0.6))
        ax.text(gx + w / 2, gy - 0.35, f"{rows}×{cols} PEs: {m}:1 activation mux, "
                f"int{bits['weight']}×int{bits['activation']}→int{bits['accumulator']} MAC",
                ha="center", va="top", fontsize=8)

        def box(x, y, bw, bh, text, fc):
            ax.add_patch(Rectangle((x, y), bw, bh, fc=fc, ec="#333333", lw=0.8))
            ax.text(x + bw / 2, y + bh / 2, text, ha="center", va="center", fontsize=8)

        def arrow(a, b, text=None, where=(0, 0)):
            ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=10, lw=1.2, color="#333333"))
            if text:
                ax.text(*where, text, fontsize=7, ha="center", va="center", color="#333333")

        box(gx, gy + h + 0.9, w, 0.8, f"weight SRAM {mem['weight_sram_kib']:g} KiB\n"
            f"(value, index) pairs: {' or '.join(map(str, slots))} per group of {m}", "#fde9c8")
        box(0.0, gy + h / 2 - 0.9, 2.2, 1.8, f"activation SRAM\n{mem['act_sram_kib']:g} KiB\n"
            f"windows of {m}", "#d9ead3")
        box(gx + w + 0.9, gy + h / 2 - 0.9, 2.0, 1.8, f"output SRAM\n{mem['out_sram_kib']:g} KiB\n"
            f"int{bits['accumulator']}", "#ead1dc")
        box(gx + w + 0.9, gy + h + 0.9, 2.0, 0.8, "controller\n(schedule folds)", "#eeeeee")
        arrow((gx + w / 2, gy + h + 0.9), (gx + w / 2, gy + h + 0.05), "weights ↓", (gx + w / 2 + 0.7, gy + h + 0.5))
        arrow((2.2, gy + h / 2), (gx - 0.05, gy + h / 2), "acts →", (2.6, gy + h / 2 + 0.3))
        arrow((gx + w + 0.05, gy + h / 2), (gx + w + 0.9, gy + h / 2), "drain", (gx + w + 0.45, gy + h / 2 + 0.3))
        arrow((gx + w + 1.9, gy + h + 0.9), (gx + w + 1.9, gy + h / 2 + 0.9))
        ax.set_xlim(-0.1, gx + w + 3.0)
        ax.set_ylim(-0.2, gy + h + 1.8)

    return svg_of(draw, size=(7.0, 5.0))


def _names(cost: Mapping[str, Any]) -> list[str]:
    return [layer["name"] for layer in cost["layers"]]


def layer_cycles(dense: Mapping[str, Any], plan: Mapping[str, Any]) -> str:
    """Per-layer cycles, dense (left bar) vs plan (right bar), stacked compute / fill / stall."""
    names = _names(dense)
    by_name = {layer["name"]: layer for layer in plan["layers"]}

    def draw(fig):
        ax = fig.add_subplot()
        x = np.arange(len(names))
        for offset, cost, hatch, label in ((-0.2, {l["name"]: l for l in dense["layers"]}, "//", "dense"),
                                           (0.2, by_name, "", "plan")):
            bottom = np.zeros(len(names))
            for part, colour in PARTS.items():
                vals = np.array([cost[n][part] if n in cost else 0 for n in names], dtype=float)
                ax.bar(x + offset, vals, 0.38, bottom=bottom, color=colour, hatch=hatch, edgecolor="white",
                       lw=0.3, label=f"{part.replace('_cycles', '')} ({label})")
                bottom += vals
            for xi, total in zip(x + offset, bottom):
                ax.text(xi, total, f"{int(total):,}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, [f"{n}\ndense | plan" for n in names])
        ax.set_ylabel("cycles")
        ax.legend(fontsize=7, ncols=2, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))

    return svg_of(draw)


def utilisation(dense: Mapping[str, Any], plan: Mapping[str, Any]) -> str:
    """Useful MACs per PE-cycle for each layer, dense vs plan (1.0 is the physical bound)."""
    names = _names(dense)
    u_plan = {layer["name"]: layer["utilization"] for layer in plan["layers"]}

    def draw(fig):
        ax = fig.add_subplot()
        x = np.arange(len(names))
        ax.bar(x - 0.2, [layer["utilization"] for layer in dense["layers"]], 0.38, color=DENSE, label="dense")
        ax.bar(x + 0.2, [u_plan.get(n, 0.0) for n in names], 0.38, color=PLAN, label="plan")
        ax.set_xticks(x, names)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("useful MACs / PE-cycle")
        ax.axhline(1.0, color="#333333", lw=0.6, ls=":")
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))

    return svg_of(draw, size=(7.0, 2.6))


def energy_breakdown(dense: Mapping[str, Any], plan: Mapping[str, Any]) -> str:
    """Energy per layer split into MAC, mux, PE registers, SRAM and DRAM, dense vs plan (nJ)."""
    names = _names(dense)
    costs = ({layer["name"]: layer for layer in dense["layers"]},
             {layer["name"]: layer for layer in plan["layers"]})

    def draw(fig):
        ax = fig.add_subplot()
        x = np.arange(len(names))
        for offset, cost, hatch in ((-0.2, costs[0], "//"), (0.2, costs[1], "")):
            bottom = np.zeros(len(names))
            for part, colour in ENERGY.items():
                vals = np.array([cost[n]["energy_breakdown_pj"].get(part, 0.0) / 1e3 if n in cost else 0.0
                                 for n in names])
                ax.bar(x + offset, vals, 0.38, bottom=bottom, color=colour, hatch=hatch, edgecolor="white",
                       lw=0.3, label=part if offset > 0 else None)
                bottom += vals
        ax.set_xticks(x, [f"{n}\ndense | plan" for n in names])
        ax.set_ylabel("energy (nJ)")
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                  title="hatched: dense", title_fontsize=7)

    return svg_of(draw)


def pareto_front(search: Mapping[str, Any]) -> str:
    """Predicted accuracy loss vs cycles: the exact front, the greedy front, every uniform
    pattern, the budget line and the chosen plan."""
    def draw(fig):
        ax = fig.add_subplot()
        for key, style, label in (("pareto", {"color": PLAN, "marker": "o", "ms": 4, "lw": 1.2}, "exact (MILP)"),
                                  ("greedy", {"color": "#f0a030", "marker": "s", "ms": 3, "lw": 1.0, "ls": "--"}, "greedy")):
            pts = sorted(search.get(key) or [], key=lambda p: p["cycles"])
            if pts:
                ax.plot([p["cycles"] for p in pts], [p["loss"] for p in pts], label=label, **style)
        for p in search.get("uniform") or []:
            ax.scatter([p["cycles"]], [p["loss"]], marker="^", color=DENSE, zorder=3)
            ax.annotate(p["pattern"], (p["cycles"], p["loss"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        chosen = search.get("chosen")
        if chosen:
            ax.scatter([chosen["cycles"]], [chosen["loss"]], marker="*", s=160, color="#d0453a", zorder=4,
                       label="chosen plan")
        if search.get("budget_cycles"):
            ax.axvline(search["budget_cycles"], color="#d0453a", lw=0.8, ls=":", label="budget")
        ax.set_xlabel("predicted cycles")
        ax.set_ylabel(search.get("loss_label", "predicted loss increase"))
        ax.legend(fontsize=7, frameon=False)

    return svg_of(draw, size=(7.0, 3.6))


def mask_picture(name: str, mask: np.ndarray, pattern: str) -> str:
    """One layer's N×K mask (dark = kept weight), as the array sees it: output channels down,
    reduction K across."""
    m = np.asarray(mask, dtype=bool)
    aspect = m.shape[1] / max(1, m.shape[0])
    width = float(np.clip(1.2 + 0.012 * m.shape[1], 2.2, 7.0))
    height = float(np.clip(width / max(aspect, 1e-3), 1.0, 3.2)) + 0.5

    def draw(fig):
        ax = fig.add_subplot()
        ax.imshow(m, cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest", aspect="auto")
        ax.set_title(f"{name}: {pattern}, {m.mean():.0%} kept", fontsize=8)
        ax.set_xlabel(f"K = {m.shape[1]}", fontsize=7)
        ax.set_ylabel(f"N = {m.shape[0]}", fontsize=7)
        ax.tick_params(labelsize=6)

    return svg_of(draw, size=(width, height))


def accuracy_by_stage(stages: Sequence[tuple[str, float | None]]) -> str:
    """Test accuracy after each stage (stages without a figure are drawn as 'n/a')."""
    def draw(fig):
        ax = fig.add_subplot()
        x = np.arange(len(stages))
        known = [v * 100 for _, v in stages if v is not None]
        low = max(0.0, min(known, default=0.0) - 5)
        vals = [v * 100 if v is not None else low for _, v in stages]
        bars = ax.bar(x, vals, 0.6, color=PLAN)
        for b, (_, v) in zip(bars, stages):
            if v is None:
                ax.text(b.get_x() + b.get_width() / 2, low, "n/a\n(not run)", ha="center", va="bottom",
                        fontsize=8, color="#8a6d00")
            else:
                ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{v:.2%}", ha="center",
                        va="bottom", fontsize=8)
        ax.set_ylim(low, 101)
        ax.set_xticks(x, [s for s, _ in stages])
        ax.set_ylabel("test accuracy (%)")

    return svg_of(draw, size=(7.0, 2.6))
