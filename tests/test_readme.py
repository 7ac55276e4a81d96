"""Every ``hwprune`` command in the README's shell blocks runs, in order, and exits 0; every
Python block runs too.

They run in-process in a scratch folder holding a link to ``examples/``, so files one command
writes (``cnn24.pt``, ``cnn24_export``, ``hwprune_demo``) are read by the next, as a reader
would run them.  ``hwprune demo`` runs in its quick mode here (:data:`QUICK_DEMO`): the full run
takes minutes and is timed by hand (its figures are in the README); ``hwprune sweep`` runs
without yosys (:data:`QUICK_SWEEP`).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from hwprune.cli import main

ROOT = Path(__file__).resolve().parent.parent
#: options appended to ``hwprune demo`` in this test (tests/test_demo.py checks the same mode)
QUICK_DEMO = ["--epochs", "3", "--finetune-epochs", "1", "--images", "16", "--no-stats"]
#: options appended to ``hwprune sweep`` here: yosys on each of the space's 16 RTL configs takes
#: about 15 minutes on 2 cores (area is tested on small designs in tests/test_sweep.py)
QUICK_SWEEP = ["--no-area"]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("&&"):  # "pip install … && hwprune estimate …"
                part = part.strip()
                if part.startswith("hwprune "):
                    commands.append(part)
    return commands


def test_readme_has_commands():
    cmds = readme_commands()
    assert len(cmds) >= 8 and any("examples/topology.csv" in c for c in cmds)
    for name in ("topology.csv", "array.toml"):
        assert (ROOT / "examples" / name).is_file()


def test_readme_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for cmd in readme_commands():
        argv = shlex.split(cmd, comments=True)[1:]
        if argv[:1] == ["demo"]:
            argv += QUICK_DEMO
        if argv[:1] == ["sweep"]:
            argv += QUICK_SWEEP
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"`{cmd}` exited {code}: {err.strip()[-500:]}"


@pytest.mark.parametrize("name", ["topology.csv", "array.toml"])
def test_examples_load(name):
    from hwprune.config import load_array
    from hwprune.importers import load_model

    path = ROOT / "examples" / name
    if name.endswith(".csv"):
        specs = load_model(path)
        assert [s.name for s in specs] == ["conv1", "conv2", "conv3_DP", "conv4", "fc"]
        assert specs[2].groups == 64 and str(specs[1].sparsity) == "2:4"
    else:
        a = load_array(path)
        assert (a.name, a.rows, a.cols, a.slot_options) == ("edge8x8", 8, 8, (1, 2, 4))


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own examples
    assert capsys.readouterr().out.strip()
