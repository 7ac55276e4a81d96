"""One self-contained HTML page from a demo run's ``summary.json`` alone.

The page is what a hardware team reads after ``hwprune demo``: the array and a block diagram,
per-layer cycles (compute / fill / stall) dense vs plan, utilisation, energy, the search's
Pareto front, every layer's mask, accuracy by stage, the RTL's cells, the simulation's
exactness and every exported file with its sha256.  Figures are matplotlib SVG embedded as
``data:`` URIs, so the file can be mailed or archived alone.  The same summary always renders
the same bytes.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..io import write_text
from . import plots

__all__ = ["REPORT_FILE", "SUMMARY_FILE", "SUMMARY_SCHEMA", "load_summary", "render_report", "write_report"]

#: schema tag of ``summary.json`` (bumped when a key changes meaning)
SUMMARY_SCHEMA = "hwprune-demo/1"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
_REQUIRED = ("schema", "array", "stages", "accuracy", "cost", "plan")


def load_summary(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``DIR/summary.json``; :class:`ExportError` names the file and the problem."""
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        raise ExportError(f"{path} not found: run `hwprune demo --out {out_dir}` first")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} must hold a JSON object, not {type(data).__name__}")
    if data.get("schema") != SUMMARY_SCHEMA:
        raise ExportError(f"{path}: schema {data.get('schema')!r}, expected {SUMMARY_SCHEMA!r}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ExportError(f"{path} lacks {', '.join(missing)}")
    return data


def write_report(out_dir: str | os.PathLike, *, force: bool = False,
                 summary: Mapping[str, Any] | None = None) -> Path:
    """Render ``DIR/summary.json`` (or ``summary``) to ``DIR/report.html``, atomically."""
    data = load_summary(out_dir) if summary is None else summary
    return write_text(Path(out_dir) / REPORT_FILE, render_report(data), force=force)


# -- rendering ---------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#123a5e;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85}main{padding:8px 32px 40px;max-width:1200px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;margin:16px 0;padding:12px 20px}
h2{font-size:17px;margin:6px 0 10px;color:#123a5e}table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 10px;text-align:right}th{background:#f0f3f7;white-space:nowrap}
td:first-child,th:first-child,td.t,th.t{text-align:left}.ok{color:#1a7f37;font-weight:600}.bad{color:#c62828;font-weight:600}
.na{color:#8a6d00}.note{color:#555;font-size:13px}.grid{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
img{max-width:100%}code{font-size:12px}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _img(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode()).decode()
    return f'<img alt="{_e(alt)}" src="data:image/svg+xml;base64,{data}">'


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], *, raw: bool = False,
           text: Sequence[int] = ()) -> str:
    """An HTML table; columns listed in ``text`` are left-aligned (numbers align right)."""
    def cls(i: int) -> str:
        return ' class="t"' if i in text else ""

    cells = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c if raw else _e(c)}</td>" for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def _num(v: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _yes(flag: bool | None) -> str:
    if flag is None:
        return '<span class="na">n/a</span>'
    return '<span class="ok">yes</span>' if flag else '<span class="bad">NO</span>'


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


#: accuracy keys of the summary, in pipeline order, with their labels
_ACC_LABELS = {"fp32": "fp32", "pruned": "pruned fp32", "int8": "int8 reference", "ort_qdq": "ORT QDQ",
               "rtl": "simulated RTL"}


def _headline(s: Mapping[str, Any]) -> str:
    rows = [[label, _e(value)] for label, value in headline_rows(s)]
    return _table(["figure", "value"], rows, raw=True)


def headline_rows(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The closing summary as (label, text) pairs: what the CLI table and the page both show."""
    acc = s["accuracy"]
    dense, plan = s["cost"]["dense"]["total"], s["cost"]["plan"]["total"]
    wb = s.get("weight_bytes", {})
    sim = s.get("simulation") or {}
    cells = [d["stats"]["array"]["cells"] + d["stats"]["controller"]["cells"]
             for d in (s.get("rtl") or {}).get("designs", []) if d.get("stats")]
    rows = [(f"{label} accuracy", _pct(acc.get(k))) for k, label in _ACC_LABELS.items() if k != "rtl"]
    if acc.get("rtl") is not None:
        rows.append(("simulated-RTL accuracy", (f"{acc['rtl']:.2%} on {sim.get('images')} images "
                     f"(int8 reference on them: {acc.get('int8_on_simulated_images', 0):.2%})")))
    else:
        rows.append(("simulated-RTL accuracy", "n/a"))
    rows += [
        ("cycles dense → plan", (f"{dense['cycles']:,} → {plan['cycles']:,} "
                                 f"({dense['cycles'] / max(1, plan['cycles']):.2f}×)")),
        ("energy dense → plan (nJ)", f"{dense['energy_pj'] / 1e3:,.1f} → {plan['energy_pj'] / 1e3:,.1f}"),
        ("weight bytes dense → plan", f"{_num(wb.get('dense'))} → {_num(wb.get('plan'))}"),
        ("RTL cells (yosys, per design)", ", ".join(f"{c:,}" for c in cells) or "n/a"),
        ("simulated layers bit-exact", _bool_text(sim.get("all_bit_exact"))),
        ("simulated layers cycle-exact", _bool_text(sim.get("all_cycle_exact"))),
    ]
    return rows


def _bool_text(flag: bool | None) -> str:
    return "n/a" if flag is None else ("yes" if flag else "NO")


def _stages(s: Mapping[str, Any]) -> str:
    rows = []
    for st in s["stages"]:
        status = st["status"]
        cls = {"done": "ok", "failed": "bad"}.get(status, "na")
        rows.append([_e(st["name"]), f'<span class="{cls}">{_e(status)}</span>', f"{st['seconds']:.1f}",
                     f"{st.get('cpu_seconds', 0):.1f}", _e(st.get("note", ""))])
    total = sum(st["seconds"] for st in s["stages"])
    cpu = sum(st.get("cpu_seconds", 0) for st in s["stages"])
    rows.append(["<b>total</b>", "", f"<b>{total:.1f}</b>", f"<b>{cpu:.1f}</b>", ""])
    return _table(["stage", "status", "wall s", "CPU s", "what happened"], rows, raw=True, text=(1, 4))


def _array(s: Mapping[str, Any]) -> str:
    a = s["array"]
    sp, bits, mem = a["sparsity"], a["bits"], a["memory"]
    rows = [["name", a["name"]], ["PEs (rows × cols)", f"{a['rows']} × {a['cols']}"],
            ["dataflow", a["dataflow"]], ["clock", f"{a['clock_mhz']:g} MHz"],
            ["N:M", f"M = {sp['m']}, N ∈ {sp['n']}, group skipping {'on' if sp['group_skipping'] else 'off'}"],
            ["fold overlap", "on" if a.get("fold_overlap") else "off"],
            ["bits (weight / act / acc)", f"{bits['weight']} / {bits['activation']} / {bits['accumulator']}"],
            ["SRAM (weight / act / out)", (f"{mem['weight_sram_kib']:g} / {mem['act_sram_kib']:g} / "
                                           f"{mem['out_sram_kib']:g} KiB")],
            ["bandwidth (SRAM / DRAM)", f"{mem['sram_bytes_per_cycle']:g} / {mem['dram_bytes_per_cycle']:g} B/cycle"]]
    designs = (s.get("rtl") or {}).get("designs", [])
    # N of every pattern the designs serve (one sparse design can serve several: 1:4 and 2:4)
    served = {int(p.split(":")[0]) if ":" in p else sp["m"] for d in designs for p in d["pattern"].split(", ")}
    diagram = plots.block_diagram(a, sorted(served) or [sp["m"]])
    return f'<div class="grid"><div>{_table(["parameter", "value"], rows)}</div><div>{_img(diagram, "block diagram")}</div></div>'


def _layers(s: Mapping[str, Any]) -> str:
    dense, plan = s["cost"]["dense"], s["cost"]["plan"]
    by = {layer["name"]: layer for layer in plan["layers"]}
    patterns = s["plan"]["layers"]
    rows = []
    for d in dense["layers"]:
        p = by.get(d["name"], d)
        rows.append([d["name"], d["kind"], f"{d['M']}×{d['K']}×{d['N']}", patterns.get(d["name"], "dense"), f"{d['cycles']:,}",
                     f"{p['cycles']:,}", f"{p['compute_cycles']:,} / {p['fill_cycles']:,} / {p['stall_cycles']:,}",
                     f"{d['cycles'] / max(1, p['cycles']):.2f}×", f"{p['utilization']:.2f}",
                     f"{p['energy_pj'] / 1e3:,.2f}"])
    t = _table(["layer", "kind", "M×K×N", "pattern", "dense cycles", "plan cycles", "compute / fill / stall",
                "speedup", "util.", "energy nJ"], rows, text=(1, 3))
    return (t + _img(plots.layer_cycles(dense, plan), "cycles per layer")
            + _img(plots.utilisation(dense, plan), "utilisation") + _img(plots.energy_breakdown(dense, plan), "energy"))


def _search(s: Mapping[str, Any]) -> str:
    plan = s["plan"]
    lines = (f'<p class="note">plan from <b>{_e(plan.get("source", "?"))}</b>, budget '
             f'{_e(plan.get("budget"))} of dense cycles = {_num(plan.get("budget_cycles"))} cycles. '
             f'{_e(plan.get("note", ""))}</p>')
    names = [layer["name"] for layer in s["cost"]["dense"]["layers"]]
    t = _table(["layer", "pattern"], [[n, plan["layers"].get(n, "dense")] for n in names], text=(1,))
    search = s.get("search")
    if not search:
        return lines + t + '<p class="na">No Pareto front: the search did not run in this demo (see stages).</p>'
    return lines + t + _img(plots.pareto_front(search), "Pareto front")


def _masks(s: Mapping[str, Any]) -> str:
    masks = s.get("masks") or {}
    if not masks:
        return '<p class="na">no masks recorded</p>'
    pics = [_img(plots.mask_picture(name, plots.unpack_mask(m), m.get("pattern", "")), f"mask {name}")
            for name, m in masks.items()]
    return '<p class="note">dark = weight kept; rows are output channels (N), columns the reduction (K).</p>' \
        + '<div class="grid">' + "".join(f"<div>{p}</div>" for p in pics) + "</div>"


def _accuracy(s: Mapping[str, Any]) -> str:
    acc = s["accuracy"]
    stages = [(label, acc.get(k)) for k, label in _ACC_LABELS.items()]
    n, sim = acc.get("test_images"), s.get("simulation") or {}
    note = f'<p class="note">on {n} digits test images'
    if acc.get("rtl") is not None and sim.get("images") != n:
        note += f'; simulated RTL on the first {sim.get("images")} of them'
    note += "</p>"
    return note + _img(plots.accuracy_by_stage(stages), "accuracy by stage")


def _rtl(s: Mapping[str, Any]) -> str:
    rtl = s.get("rtl") or {}
    out = []
    designs = rtl.get("designs") or []
    if designs:
        rows = []
        for d in designs:
            st = d.get("stats") or {}
            arr, ctl = st.get("array", {}), st.get("controller", {})
            rows.append([d["pattern"], d["verilog"], _num(arr.get("cells")), _num(arr.get("flip_flops")),
                         _num(arr.get("multipliers")), _num(ctl.get("cells"))])
        out.append(_table(["design", "Verilog", "array cells", "array flip-flops", "multipliers",
                           "controller cells"], rows, text=(1,)))
    sim = s.get("simulation")
    if sim:
        out.append(f'<p class="note">{_e(sim.get("mode", ""))}</p>')
        rows = [[_e(r["layer"]), _e(r["pattern"]), f"{r['M']}×{r['K']}×{r['N']}", f"{r['cycles']:,}",
                 f"{r['predicted_cycles']:,}", _yes(r["cycle_exact"]), _yes(r["bit_exact"])]
                if "skipped" not in r else [_e(r["layer"]), f'<span class="na">skipped: {_e(r["skipped"])}</span>',
                                            "", "", "", "", ""]
                for r in sim["layers"]]
        out.append(_table(["layer", "design", "M×K×N", "simulated cycles", "predicted (int8 mask)",
                           "cycle-exact", "bit-exact"], rows, raw=True, text=(1,)))
    return "".join(out) or '<p class="na">the RTL stages did not run</p>'


def _files(s: Mapping[str, Any]) -> str:
    files = s.get("files") or []
    if not files:
        return '<p class="na">no files exported</p>'
    def table(group: Sequence[Mapping[str, Any]]) -> str:
        rows = [[_e(f["path"]), f"{f['bytes']:,}", f"<code>{_e(f['sha256'])}</code>"] for f in group]
        return _table(["file", "bytes", "sha256"], rows, raw=True, text=(2,))

    # a layer's memory images (export/LAYER/*) fold into one line each; open it for the hashes
    folders: dict[str, list[Mapping[str, Any]]] = {}
    for f in files:
        parts = f["path"].split("/")
        folders.setdefault("/".join(parts[:2]) if len(parts) > 2 else "", []).append(f)
    out = [table(folders.pop("", []))]
    for folder, group in folders.items():
        total = sum(f["bytes"] for f in group)
        out.append(f"<details><summary>{_e(folder)}/: {len(group)} memory-image files, {total:,} bytes"
                   f"</summary>{table(group)}</details>")
    return "".join(out)


def render_report(summary: Mapping[str, Any]) -> str:
    """The report page (HTML text) for a demo summary."""
    s = summary
    title = f"hwprune demo — {s.get('model', 'model')} on {s['array']['name']}"
    sections = [
        ("Summary", _headline(s), "summary"),
        ("Stages", _stages(s), "stages"),
        ("Array", _array(s), "array"),
        ("Cycles, utilisation and energy per layer", _layers(s), "layers"),
        ("Plan and search", _search(s), "search"),
        ("Masks", _masks(s), "masks"),
        ("Accuracy by stage", _accuracy(s), "accuracy"),
        ("RTL and cycle-accurate simulation", _rtl(s), "rtl"),
        ("Exported files", _files(s), "files"),
    ]
    sub = (f"hwprune {_e(s.get('version', '?'))} · {_e(s.get('created', ''))} · budget "
           f"{_e(s['plan'].get('budget'))} of dense cycles")
    body = "".join(_section(t, b, a) for t, b, a in sections)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body><header><h1>{_e(title)}</h1><p>{sub}</p></header>"
            f"<main>{body}</main></body></html>\n")
