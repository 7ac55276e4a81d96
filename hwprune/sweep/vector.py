"""The cost model over many array configurations at once: numpy over configs, per layer.

A sweep asks the same question of thousands of arrays: what does each layer cost on each?
:func:`cost_batch` answers it for pattern-level costing (a pattern per layer, no mask) with
exactly the numbers :func:`hwprune.cost.estimate_model` gives, one config at a time (a property
test holds the two equal on every point).  It does not re-derive the schedule: what depends on
the sparsity hardware alone — the issue width, the expected share of issued groups, the packed
output channels — comes from :func:`hwprune.schedule.make_schedule` run once per distinct
(M, N-set, group skipping[, columns]) of the batch; what depends on rows, columns, widths and
energies is the counting of :func:`hwprune.cost._count` written over arrays; the passes (chunks,
order, words moved, the single/double-buffered timeline) are :func:`hwprune.schedule.plan_grid`,
the planner ``estimate_model`` calls, run on all configs at once (per-bank capacities from
:func:`hwprune.schedule.pass_capacity`, cached per config and issue width); WS/IS configs use the
formulas of :mod:`hwprune.dataflow` unchanged.  Layers equal in everything the costing reads (kind,
shape, conv geometry, pattern: a ResNet's repeated blocks) are costed once per call.

A config that cannot run a layer's pattern (an N:M its N-set lacks) is marked in ``ok`` instead
of raising.  A layer whose own weights are sparse and that gets no pattern is costed from its
mask by the scalar path (exact-mask costing has no shortcut over configs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from ..config import ArrayConfig
from ..cost import dram_traffic, estimate_layer, layer_mask
from ..dataflow import (STATIONARY, stationary_compute_cycles, stationary_dram_refetch,
                        stationary_hop_bits, stationary_psum_spill, stationary_sram_elems)
from ..errors import ConfigError
from ..ir import LayerSpec
from ..patterns import Block, Dense, SparsityPattern, Unstructured
from ..schedule import PassGrid, PassWords, make_schedule, pass_capacity, plan_grid

__all__ = ["ConfigBatch", "BatchCost", "cost_batch", "TRAFFIC_FIELDS"]

#: the eight byte counters of :class:`hwprune.cost.Traffic`, in its order
TRAFFIC_FIELDS = ("weights_sram", "index_sram", "acts_sram", "outputs_sram",
                  "weights_dram", "index_dram", "acts_dram", "outputs_dram")


def _col(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(-1, 1)


def _ceil8(bits: np.ndarray) -> np.ndarray:
    return -(-bits // 8)


@dataclass(frozen=True, slots=True)
class ConfigBatch:
    """P array configs as columns of numbers (one numpy array per field, shape (P,))."""

    configs: tuple[ArrayConfig, ...]
    columns: Mapping[str, np.ndarray]
    #: issue width → (configs, 8) per-bank capacities and word bytes (:func:`capacities`), −1 = not yet
    _capacity: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, configs: Sequence[ArrayConfig]) -> ConfigBatch:
        """Columns of ``configs`` (validated :class:`ArrayConfig` objects)."""
        configs = tuple(configs)
        if not configs:
            raise ConfigError("a config batch needs at least one array config")
        col = {
            "rows": [c.rows for c in configs], "cols": [c.cols for c in configs],
            "group_size": [c.group_size for c in configs], "index_bits": [c.index_bits for c in configs],
            "fold_overlap": [c.fold_overlap for c in configs],
            "weight_bits": [c.weight_bits for c in configs], "act_bits": [c.act_bits for c in configs],
            "acc_bits": [c.acc_bits for c in configs],
            "w_sram": [c.weight_sram_kib * 1024 for c in configs],
            "a_sram": [c.act_sram_kib * 1024 for c in configs],
            "o_sram": [c.out_sram_kib * 1024 for c in configs],
            "sram_bpc": [c.sram_bytes_per_cycle for c in configs],
            "dram_bpc": [c.dram_bytes_per_cycle for c in configs],
            "double_buffer": [c.double_buffer for c in configs],
            **{f"e_{f.name}": [getattr(c.energy, f.name) for c in configs]
               for f in fields(configs[0].energy)},
        }
        cols = {k: np.asarray(v) for k, v in col.items()}
        for k in ("rows", "cols", "group_size", "index_bits", "weight_bits", "act_bits", "acc_bits"):
            cols[k] = cols[k].astype(np.int64)
        # ids of the distinct sparsity hardware (M, N-set, skipping), and of it with the columns
        for name, key in (("hw_id", lambda c: (c.group_size, c.slot_options, c.group_skipping)),
                          ("hw_cols_id", lambda c: (c.group_size, c.slot_options, c.group_skipping, c.cols))):
            ids: dict[tuple, int] = {}
            cols[name] = np.array([ids.setdefault(key(c), len(ids)) for c in configs], dtype=np.int64)
        return cls(configs, cols)

    def __len__(self) -> int:
        return len(self.configs)

    def capacities(self, sel: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Per-bank weight, activation and fold capacities and the five memories' word bytes
        (:func:`hwprune.schedule.pass_capacity`) of configs ``sel`` issuing ``slots``, shape
        (len(sel), 8); a row of zeros where the design has no such memory (a ConfigError)."""
        out = np.zeros((sel.size, 8), dtype=np.int64)
        for s in np.unique(slots):
            table = self._capacity.setdefault(int(s), np.full((len(self), 8), -1, dtype=np.int64))
            rows = sel[slots == s]
            for p in rows[table[rows, 0] < 0]:
                try:
                    cap = pass_capacity(self.configs[p], int(s))
                    table[p] = (cap.weights, cap.acts, cap.folds, *cap.word_bytes.as_dict().values())
                except ConfigError:
                    table[p] = 0
            out[slots == s] = table[rows]
        return out

    def __getitem__(self, key: str) -> np.ndarray:
        return self.columns[key]


@dataclass(frozen=True, slots=True)
class BatchCost:
    """Per-(layer, config) costs, every array of shape (layers, configs).

    ``ok`` is False where a config cannot run the layer's pattern (the other numbers are 0
    there).  ``cycles`` = compute + fill + stall, as :attr:`hwprune.cost.LayerCost.cycles`.
    """

    layers: tuple[str, ...]
    batch: ConfigBatch
    values: Mapping[str, np.ndarray]

    def __getitem__(self, key: str) -> np.ndarray:
        if key == "cycles":
            return self.values["compute_cycles"] + self.values["fill_cycles"] + self.values["stall_cycles"]
        if key in ("sram", "dram"):
            return sum(self.values[f] for f in TRAFFIC_FIELDS if f.endswith(key))
        return self.values[key]

    @property
    def ok(self) -> np.ndarray:
        """Configs that run every layer, shape (configs,)."""
        return self.values["ok"].all(axis=0)

    def total(self, key: str) -> np.ndarray:
        """Model totals per config, summed layer by layer in order (as ``ModelCost.total``)."""
        per_layer = self[key]
        out = np.zeros(per_layer.shape[1], dtype=per_layer.dtype)
        for row in per_layer:
            out = out + row
        return out


_INT_KEYS = ("compute_cycles", "fill_cycles", "stall_cycles", "macs_executed", "macs_nonzero",
             *TRAFFIC_FIELDS)


def cost_batch(specs: Sequence[LayerSpec], configs: ConfigBatch | Sequence[ArrayConfig],
               pattern: SparsityPattern | None = None,
               patterns: Mapping[str, SparsityPattern] | None = None) -> BatchCost:
    """Cost of every layer on every config: ``estimate_model`` for each config, vectorised.

    Parameters
    ----------
    specs : sequence of LayerSpec
        The model.
    configs : ConfigBatch or sequence of ArrayConfig
        The arrays (any dataflow, any mix).
    pattern, patterns : optional
        As in :func:`hwprune.cost.estimate_model`: ``patterns[name]`` beats ``pattern`` beats
        each layer's recorded sparsity, else dense.

    Returns
    -------
    BatchCost
    """
    batch = configs if isinstance(configs, ConfigBatch) else ConfigBatch.of(configs)
    patterns = patterns or {}
    P = len(batch)
    out = {k: np.zeros((len(specs), P), dtype=np.int64) for k in _INT_KEYS}
    out["energy_pj"] = np.zeros((len(specs), P))
    out["ok"] = np.zeros((len(specs), P), dtype=bool)
    flows = np.array([c.dataflow for c in batch.configs])
    costed: dict[tuple, int] = {}   # what the costing reads of a layer → its first row
    for i, spec in enumerate(specs):
        pat = patterns.get(spec.name, pattern)
        if pat is None and layer_mask(spec) is not None:
            _scalar_layer(spec, batch, None, out, i)   # exact-mask costing of the layer's own zeros
            continue
        pat = pat if pat is not None else (spec.sparsity or Dense())
        if not spec.has_weights:
            pat = Dense()
        # repeated layers (a ResNet's identical blocks) are costed once: everything below reads
        # only the shape, the kind, the conv geometry and the pattern, never the name
        key = (spec.kind, spec.M, spec.K, spec.N, spec.groups, spec.conv, spec.has_weights, pat)
        if key in costed:
            for v in out.values():
                v[i] = v[costed[key]]
            continue
        costed[key] = i
        sel = flows == "os"
        if sel.any():
            _os_layer(spec, pat, batch, np.flatnonzero(sel), out, i)
        for flow in STATIONARY:
            sel = np.flatnonzero(flows == flow)
            if sel.size:
                _stationary_layer(spec, pat, flow, batch, sel, out, i)
    return BatchCost(tuple(s.name for s in specs), batch, out)


def _scalar_layer(spec: LayerSpec, batch: ConfigBatch, pat: SparsityPattern | None,
                  out: dict[str, np.ndarray], i: int) -> None:
    for p, cfg in enumerate(batch.configs):
        try:
            c = estimate_layer(spec, cfg, pat)
        except ConfigError:
            continue
        for k in ("compute_cycles", "fill_cycles", "stall_cycles", "macs_executed", "macs_nonzero"):
            out[k][i, p] = getattr(c, k)
        for k in TRAFFIC_FIELDS:
            out[k][i, p] = getattr(c.bytes, k)
        out["energy_pj"][i, p] = c.energy_pj
        out["ok"][i, p] = True


def _nonzero(spec: LayerSpec, pat: SparsityPattern) -> int:
    return round(spec.macs * pat.density) if spec.has_weights else spec.macs


def _sparsity_terms(spec: LayerSpec, pat: SparsityPattern, batch: ConfigBatch,
                    sel: np.ndarray) -> tuple[np.ndarray, ...]:
    """Issue width, expected issue share, packed channels, fill and ok per selected config,
    from one schedule per distinct sparsity hardware (the columns matter only to the
    statistical estimate of unstructured and block patterns)."""
    ids = batch["hw_cols_id" if isinstance(pat, (Unstructured, Block)) else "hw_id"][sel]
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    terms = np.zeros((uniq.size, 5))
    for u, j in enumerate(first):
        try:
            s = make_schedule(spec, batch.configs[sel[j]], pat)
            terms[u] = (s.slots, s.expected_issue, s.n_out, s.fill_cycles(), 1)
        except ConfigError:
            pass
    per = terms[inverse.reshape(-1)]
    slots, expected, n_out, fill, ok = per.T
    return slots.astype(np.int64), expected, n_out.astype(np.int64), fill.astype(np.int64), ok.astype(bool)


def _os_layer(spec: LayerSpec, pat: SparsityPattern, batch: ConfigBatch, sel: np.ndarray,
              out: dict[str, np.ndarray], i: int) -> None:
    """hwprune.cost._count over configs (no mask: every group issued, scaled by ``expected``)."""
    slots, expected, n_out, fill, ok = _sparsity_terms(spec, pat, batch, sel)
    n_out = np.maximum(n_out, 1)
    c = {k: v[sel] for k, v in batch.columns.items()}
    R, C, gs = c["rows"], c["cols"], c["group_size"]
    M, K, G = spec.M, spec.K, spec.groups
    kp = np.rint((K // gs * slots + np.minimum(K % gs, slots)) * expected).astype(np.int64)
    col_tiles, row_tiles = -(-n_out // C), -(-M // R)
    # hwprune.schedule.fold_gap over arrays
    gap = np.where(c["fold_overlap"], np.minimum(np.maximum(R, C - 1), R + C - 2), R + C - 2)
    compute = G * col_tiles * (kp + gap) * row_tiles - gap + R + C - 3
    slot_words = G * kp * n_out
    macs_executed = slot_words * M
    act_reads = np.round(G * col_tiles * K * expected).astype(np.int64) * M
    wb, ab, accb = c["weight_bits"], c["act_bits"], c["acc_bits"]
    sib = np.where(slots < gs, c["index_bits"], 0)
    w_store, i_store = _ceil8(slot_words * wb), _ceil8(slot_words * sib)
    ok = ok & (slots > 0)
    caps = batch.capacities(sel[ok], slots[ok])
    cap = np.zeros((sel.size, 8), dtype=np.int64)
    cap[ok] = caps
    ok = ok & (cap[:, 0] > 0)
    plan = plan_grid(PassGrid(
        rows=_col(R), cols=_col(C), groups=G, K=K, group_size=_col(gs), slots=_col(np.maximum(slots, 1)),
        expected=_col(expected), row_tiles=_col(row_tiles), col_tiles=_col(col_tiles),
        k_groups=_col(-(-K // gs)), gap=_col(gap), fill=_col(fill), cap_w=_col(cap[:, 0]),
        cap_a=_col(cap[:, 1]), cap_f=_col(cap[:, 2]), word_bytes=tuple(_col(cap[:, 3 + i]) for i in range(5)),
        dram_bpc=_col(c["dram_bpc"]), double=_col(c["double_buffer"])))
    ok = ok & plan["ok"]
    moved = tuple(plan[f"moved_{m}"] * cap[:, 3 + i] for i, m in enumerate(PassWords.__slots__))
    dram = dram_traffic(moved, wb, sib)
    outputs = M * n_out * G
    traffic = {
        "weights_sram": w_store * row_tiles, "index_sram": i_store * row_tiles,
        "acts_sram": _ceil8(act_reads * ab), "outputs_sram": _ceil8(outputs * accb),
        "weights_dram": dram[0], "index_dram": dram[1], "acts_dram": dram[2], "outputs_dram": dram[3]}
    fill = plan["array_cycles"] - compute
    stall = plan["cycles"] - plan["array_cycles"]
    mux = np.where(slots < gs, macs_executed * c["e_mux"], 0.0)
    hops = macs_executed * (wb + sib + ab) / 8
    energy = _energy(c, macs_executed * c["e_mac"], mux, hops * c["e_reg_byte"], traffic)
    _store(out, i, sel, ok, compute=compute, fill_cycles=fill, stall_cycles=stall,
           macs_executed=macs_executed, macs_nonzero=np.full(sel.size, _nonzero(spec, pat)),
           energy_pj=energy, traffic=traffic)


def _stationary_layer(spec: LayerSpec, pat: SparsityPattern, flow: str, batch: ConfigBatch,
                      sel: np.ndarray, out: dict[str, np.ndarray], i: int) -> None:
    """hwprune.dataflow.estimate_stationary over configs."""
    c = {k: v[sel] for k, v in batch.columns.items()}
    R, C = c["rows"], c["cols"]
    M, K, G, npg = spec.M, spec.K, spec.groups, spec.n_per_group
    compute = stationary_compute_cycles(flow, R, C, M, K, npg, G)
    w_el, a_el, o_el = stationary_sram_elems(flow, R, C, M, K, npg, G)
    wb, ab, accb = c["weight_bits"], c["act_bits"], c["acc_bits"]
    w_bytes, in_bytes = _ceil8(spec.N * K * wb), _ceil8(_input_elems(spec) * ab)
    w_ref, a_ref = stationary_dram_refetch(flow, R, C, M, K, npg, w_bytes, in_bytes, c["w_sram"], c["a_sram"])
    spill = stationary_psum_spill(flow, R, C, M, K, npg, accb, c["o_sram"], G)
    zeros = np.zeros(sel.size, dtype=np.int64)
    traffic = {
        "weights_sram": _ceil8(w_el * wb), "index_sram": zeros, "acts_sram": _ceil8(a_el * ab),
        "outputs_sram": _ceil8(o_el * accb), "weights_dram": w_bytes * w_ref, "index_dram": zeros,
        "acts_dram": in_bytes * a_ref, "outputs_dram": _ceil8(M * spec.N * ab) + spill}
    stall = _stall(traffic, c, compute)
    reg = spec.macs * stationary_hop_bits(flow, wb, ab, accb) / 8 * c["e_reg_byte"]
    energy = _energy(c, spec.macs * c["e_mac"], np.zeros(sel.size), reg, traffic)
    _store(out, i, sel, np.ones(sel.size, dtype=bool), compute=compute, fill_cycles=zeros,
           stall_cycles=stall, macs_executed=np.full(sel.size, spec.macs),
           macs_nonzero=np.full(sel.size, _nonzero(spec, pat)), energy_pj=energy, traffic=traffic)


def _input_elems(spec: LayerSpec) -> int:
    from ..cost import _input_elems as count
    return count(spec)


def _stall(traffic: Mapping[str, np.ndarray], c: Mapping[str, np.ndarray], busy: np.ndarray) -> np.ndarray:
    sram_need = np.maximum.reduce([traffic["weights_sram"] + traffic["index_sram"], traffic["acts_sram"],
                                   traffic["outputs_sram"]])
    dram = sum(traffic[f] for f in TRAFFIC_FIELDS if f.endswith("dram"))
    transfer = np.maximum(dram / c["dram_bpc"], sram_need / c["sram_bpc"])
    return np.maximum(0, np.ceil(transfer).astype(np.int64) - busy)


def _energy(c: Mapping[str, np.ndarray], mac: np.ndarray, mux: np.ndarray, reg: np.ndarray,
            traffic: Mapping[str, np.ndarray]) -> np.ndarray:
    sram = sum(traffic[f] for f in TRAFFIC_FIELDS if f.endswith("sram"))
    dram = sum(traffic[f] for f in TRAFFIC_FIELDS if f.endswith("dram"))
    # the scalar path adds the breakdown in this order: keep it, for equal floats
    return mac + mux + reg + sram * c["e_sram_byte"] + dram * c["e_dram_byte"]


def _store(out: dict[str, np.ndarray], i: int, sel: np.ndarray, ok: np.ndarray, *, compute, fill_cycles,
           stall_cycles, macs_executed, macs_nonzero, energy_pj, traffic) -> None:
    cols = sel[ok]
    vals = {"compute_cycles": compute, "fill_cycles": fill_cycles, "stall_cycles": stall_cycles,
            "macs_executed": macs_executed, "macs_nonzero": macs_nonzero, "energy_pj": energy_pj, **traffic}
    for k, v in vals.items():
        out[k][i, cols] = np.broadcast_to(v, sel.shape)[ok]
    out["ok"][i, cols] = True
