"""Which patterns the search may give a layer: the candidate set.

The default set is derived from the array, so that the search *sees* what the hardware can and
cannot exploit:

* ``dense``;
* every N:M the array issues natively (``n:M`` for each slot option below the group size M),
  and one level below the sparsest native one (``1:4`` on an array that only issues 2 of 4
  slots, ``1:8`` on one that issues 1 of 4): it runs at the native speed, padded, yet loses
  more accuracy — the search must see that it buys (almost) nothing;
* channel pruning at keep ratios 0.75, 0.5, 0.25 and 0.125 (never on the network's output layer:
  removing its channels removes classes);
* channel-aligned blocks ``block:<cols>x<M>`` at densities 0.5 and 0.25 — one array tile wide,
  one K group deep, the shape that group skipping turns into skipped cycles;
* unstructured at densities 0.5 and 0.25, which cost their dense cycles on an N:M array.

:func:`parse_candidates` reads the ``--candidates`` text: a comma-separated list of patterns
(``dense,2:4,channel:0.5``) replaces the set; items prefixed ``+`` or ``-`` widen or narrow the
default set, and a bare kind name (``-unstructured``, ``+block``) stands for every default
candidate of that kind.
"""

from __future__ import annotations

from ..config import ArrayConfig
from ..errors import ConfigError
from ..patterns import (
    NM,
    PATTERN_SYNTAX,
    Block,
    Channel,
    Dense,
    SparsityPattern,
    Unstructured,
    parse_pattern,
)

__all__ = ["CANDIDATES_SYNTAX", "default_candidates", "parse_candidates"]

#: keep ratios of the default channel candidates
CHANNEL_KEEPS = (0.75, 0.5, 0.25, 0.125)
#: densities of the default block and unstructured candidates
BLOCK_DENSITIES = (0.5, 0.25)
UNSTRUCTURED_DENSITIES = (0.5, 0.25)

#: the ``--candidates`` syntax, for help texts and error messages
CANDIDATES_SYNTAX = ("comma-separated patterns (replace the default set) or +PATTERN / -PATTERN / "
                     "+KIND / -KIND (widen or narrow it; KIND is dense, nm, channel, block or "
                     f"unstructured); patterns: {PATTERN_SYNTAX}")


def _below(array: ArrayConfig) -> NM:
    """Half the density of the sparsest native N:M: n/2 of M, or 1 of 2·M when n is already 1.

    Any N:M mask runs on the array (a group's slots are the smallest issue width that holds its
    non-zeros), so this candidate is always runnable; it is never faster than the native one.
    """
    m, sparsest = array.group_size, min(array.slot_options)
    return NM(sparsest // 2, m) if sparsest > 1 else NM(1, 2 * m)


def default_candidates(array: ArrayConfig) -> tuple[SparsityPattern, ...]:
    """The default candidate set of ``array`` (see the module docstring), in a stable order."""
    m = array.group_size
    native = [NM(n, m) for n in sorted(array.slot_options, reverse=True) if n < m]
    return (Dense(), *native, _below(array),
            *(Channel(k) for k in CHANNEL_KEEPS),
            *(Block(array.cols, m, d) for d in BLOCK_DENSITIES),
            *(Unstructured(d) for d in UNSTRUCTURED_DENSITIES))


_KINDS = {"dense": Dense, "nm": NM, "channel": Channel, "block": Block, "unstructured": Unstructured}


def parse_candidates(text: str | None, array: ArrayConfig) -> tuple[SparsityPattern, ...]:
    """The candidate set ``text`` describes (None: the default set), validated against ``array``."""
    default = default_candidates(array)
    if text is None:
        return default
    if not isinstance(text, str):
        raise ConfigError(f"candidates must be text such as 'dense,2:4,channel:0.5', not {text!r}")
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"empty candidate list {text!r}; expected {CANDIDATES_SYNTAX}")
    signed = [t[0] in "+-" for t in items]
    if any(signed) and not all(signed):
        raise ConfigError(f"candidates {text!r} mix a replacing list with +/- edits; use one or the other")
    if not any(signed):
        chosen = [_one(t) for t in items]
    else:
        chosen = list(default)
        for t in items:
            sign, body = t[0], t[1:].strip()
            kind = _KINDS.get(body.lower())
            if kind is not None:
                group = [p for p in default if isinstance(p, kind)]
                if sign == "+":
                    chosen += [p for p in group if p not in chosen]
                else:
                    chosen = [p for p in chosen if not isinstance(p, kind)]
                continue
            pat = _one(body)
            if sign == "+" and pat not in chosen:
                chosen.append(pat)
            elif sign == "-":
                if pat not in chosen:
                    raise ConfigError(f"cannot remove candidate {pat}: not in the set "
                                      f"({', '.join(map(str, chosen))})")
                chosen.remove(pat)
    unique = list(dict.fromkeys(chosen))
    if not unique:
        raise ConfigError(f"candidates {text!r} leave no candidate at all")
    return tuple(unique)


def _one(text: str) -> SparsityPattern:
    try:
        return parse_pattern(text)
    except ConfigError as exc:
        raise ConfigError(f"candidate {text!r}: {exc}") from None
