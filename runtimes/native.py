"""The native (C++) runner: building it for x86_64 or aarch64, running it, and checking an artifact on ARM arithmetic.

The sources are in ``runtimes/native/`` (a C ABI, ``edgeseq.h``; the runner ``edgeseq-run``; a C example). They are
compiled with g++ against the ExecuTorch runtime the executorch wheel ships (headers, ``libexecutorch.so``, the
XNNPACK backend, the optimized kernels): for x86_64 the installed package, for aarch64 the same version's
``manylinux_2_28_aarch64`` wheel (fetched once with ``pip download`` into the cache) and Debian's
``aarch64-linux-gnu-g++``. An aarch64 build runs here under ``qemu-aarch64 -cpu <the device's core>``: the program's
arithmetic is ARM's (XNNPACK's NEON / dot-product / fp16 kernels), its speed means nothing. See docs/on-device.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseq.errors import ArtifactError, EdgeseqError, MissingDependencyError

SOURCES = Path(__file__).resolve().parent / "native"
ARCHES = ("x86_64", "aarch64")
COMPILERS = {"x86_64": "g++", "aarch64": "aarch64-linux-gnu-g++"}
APT = {"x86_64": "g++", "aarch64": "g++-aarch64-linux-gnu"}
QEMU_LD_PREFIX = "/usr/aarch64-linux-gnu"


def cache_dir() -> Path:
    return Path(os.environ.get("EDGESEQ_CACHE", Path.home() / ".cache" / "edgeseq")) / "native"


def executorch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        raise MissingDependencyError("executorch is not installed; install it with: pip install 'edgeseq[executorch]'") from None


def runtime_root(arch: str) -> Path:
    """The folder holding ``include/`` and ``lib/`` of the ExecuTorch runtime for ``arch``."""
    if arch == "x86_64":
        import importlib.util

        executorch_version()
        return Path(list(importlib.util.find_spec("executorch").submodule_search_locations)[0])
    ver = executorch_version()
    root = cache_dir() / f"executorch-{ver}-aarch64" / "executorch"
    if (root / "lib" / "libexecutorch.so").is_file():
        return root
    wheels = cache_dir() / "wheels"
    found = sorted(wheels.glob(f"executorch-{ver}-*aarch64*.whl"))
    if not found:
        cmd = ["pip", "download", "--no-deps", "--platform", "manylinux_2_28_aarch64", "--python-version",
               "3.11", "--only-binary=:all:", f"executorch=={ver}", "-d", str(wheels)]
        r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True)
        found = sorted(wheels.glob(f"executorch-{ver}-*aarch64*.whl"))
        if r.returncode or not found:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise MissingDependencyError(f"cannot fetch the aarch64 executorch {ver} wheel ({last}); run: {' '.join(cmd)}")
    with zipfile.ZipFile(found[-1]) as z:
        members = [m for m in z.namelist() if m.startswith(("executorch/lib/", "executorch/include/"))]
        z.extractall(root.parent, members)
    return root


def torch_include() -> Path:
    import torch

    return Path(torch.__file__).resolve().parent / "include"  # headers only (c10 macros the runtime's need)


def compiler(arch: str) -> str:
    cc = COMPILERS[arch]
    if shutil.which(cc) is None:
        raise MissingDependencyError(f"{cc} is not installed; install it with: apt-get install {APT[arch]}")
    return cc


@dataclass
class Build:
    arch: str
    out: Path
    library: Path
    runner: Path
    example: Path
    runtime: Path  # the ExecuTorch runtime folder (its lib/ is the runner's library path)

    def env(self) -> dict[str, str]:
        paths = f"{self.out}:{self.runtime / 'lib'}"
        return {**os.environ, "LD_LIBRARY_PATH": paths + (":" + os.environ["LD_LIBRARY_PATH"] if os.environ.get("LD_LIBRARY_PATH") else "")}


def _flags(arch: str, root: Path) -> tuple[list[str], list[str]]:
    inc = [f"-I{root / 'include'}", f"-I{root / 'include/executorch/runtime/core/portable_type/c10'}",
           f"-I{torch_include()}", f"-I{SOURCES}"]
    link = [f"-L{root / 'lib'}", "-Wl,--no-as-needed", "-lexecutorch", "-lexecutorch_backend_xnnpack",
            "-lexecutorch_kernels_optimized", "-lexecutorch_threadpool", "-Wl,--as-needed"]
    return inc, link


def _compile(cmd: list[str], what: str, verbose: bool) -> None:
    if verbose:
        print(" ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        first = next((line for line in r.stderr.splitlines() if "error" in line), r.stderr.strip()[-300:])
        raise EdgeseqError(f"building {what} failed: {first}")


def _fresh(outputs, sources) -> bool:
    newest = max(p.stat().st_mtime for p in sources)
    return all(p.is_file() and p.stat().st_mtime > newest for p in outputs)


def _prepare(arch: str, out: Path | None) -> tuple[str, Path, Path]:
    """The compiler, the ExecuTorch runtime folder and the (created) output folder (default: the cache) for ``arch``."""
    if arch not in ARCHES:
        raise EdgeseqError(f"--arch {arch}: expected one of {', '.join(ARCHES)}")
    cc, root = compiler(arch), runtime_root(arch)
    out = Path(out) if out is not None else cache_dir() / f"build-{arch}-{executorch_version()}"
    out.mkdir(parents=True, exist_ok=True)
    return cc, root, out


def build_kernels(arch: str = "x86_64", out: Path | None = None, verbose: bool = False) -> Path:
    """``libedgeseq_kernels.so`` for ``arch`` (edgeseq's own ExecuTorch operators, ``edgeseq_kernels.cpp``) in
    ``out`` (default: the cache); skipped when it is newer than its source. Its soname is fixed, so that a process
    holding it (the Python executorch runtime, runtimes/kernels.py) and ``libedgeseq_runtime.so``, which links it,
    share one copy and one registration."""
    cc, root, out = _prepare(arch, out)
    lib = out / "libedgeseq_kernels.so"
    src = SOURCES / "edgeseq_kernels.cpp"
    if _fresh([lib], [src]):
        return lib
    inc, _ = _flags(arch, root)
    rpath = [f"-Wl,-rpath,{root / 'lib'}"] if arch == "x86_64" else []
    tmp = out / f".libedgeseq_kernels.{os.getpid()}.so"  # written whole, then renamed: a loaded copy stays intact
    try:
        _compile([cc, "-std=c++17", "-O2", "-fPIC", "-shared", "-Wl,-soname,libedgeseq_kernels.so", "-o", str(tmp),
                  str(src), *inc, f"-L{root / 'lib'}", "-Wl,--no-as-needed", "-lexecutorch", "-Wl,--as-needed",
                  *rpath], f"the {arch} kernels (edgeseq_kernels.cpp)", verbose)
        os.replace(tmp, lib)
    finally:
        tmp.unlink(missing_ok=True)
    return lib


def build(arch: str = "x86_64", out: Path | None = None, verbose: bool = False) -> Build:
    """Compile edgeseq's kernels, the library, the runner and the C example for ``arch`` into ``out`` (default: the
    cache); skipped when the outputs are newer than every source."""
    cc, root, out = _prepare(arch, out)
    b = Build(arch, out, out / "libedgeseq_runtime.so", out / "edgeseq-run", out / "edgeseq-example", root)
    build_kernels(arch, out, verbose)
    if _fresh((b.library, b.runner, b.example), [p for p in SOURCES.iterdir() if p.is_file()]):
        return b
    inc, link = _flags(arch, root)
    link = [f"-L{out}", "-Wl,--no-as-needed", "-ledgeseq_kernels", *link]  # registers edgeseq's operators
    rpath = [f"-Wl,-rpath,{out}", f"-Wl,-rpath,{root / 'lib'}"] if arch == "x86_64" else []
    steps = [
        [cc, "-std=c++17", "-O2", "-fPIC", "-shared", "-o", str(b.library), str(SOURCES / "edgeseq_runtime.cpp"),
         *inc, *link, *rpath],
        [cc, "-std=c++17", "-O2", "-o", str(b.runner), str(SOURCES / "edgeseq_run.cpp"), f"-I{SOURCES}",
         f"-L{out}", "-ledgeseq_runtime", *link, *rpath],
        [cc, "-x", "c", "-O2", "-o", str(b.example), str(SOURCES / "example.c"), f"-I{SOURCES}", "-x", "none",
         f"-L{out}", "-ledgeseq_runtime", *link, *rpath, "-lstdc++"],
    ]
    for cmd in steps:
        _compile(cmd, f"the {arch} runner", verbose)
    return b


def _command(b: Build, qemu_cpu: str | None) -> tuple[list[str], dict[str, str]]:
    env = b.env()
    if b.arch == "x86_64":
        return [str(b.runner)], env
    if shutil.which("qemu-aarch64") is None:
        raise MissingDependencyError("qemu-aarch64 is not installed; install it with: apt-get install qemu-user")
    env["QEMU_LD_PREFIX"] = QEMU_LD_PREFIX
    return ["qemu-aarch64", "-cpu", qemu_cpu or "cortex-a76", str(b.runner)], env


def _run_runner(b: Build, args: list[str], env: dict[str, str]) -> str:
    """Run the runner; its stdout, or its last ``error:`` line as an :class:`ArtifactError`."""
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    if r.returncode:
        lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        raise ArtifactError(f"the {b.arch} runner: {lines[-1][7:] if lines else r.stderr.strip()[-300:]}")
    return r.stdout


def run(b: Build, artifact: Path, frames: np.ndarray, qemu_cpu: str | None = None, *, all_steps: bool = True,
        state_in: Path | None = None, state_out: Path | None = None, workdir: Path | None = None) -> np.ndarray:
    """Stream ``frames`` (T, d_in) or (T, batch, d_in) through ``artifact`` with the runner; its outputs."""
    import tempfile

    cmd, env = _command(b, qemu_cpu)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        x, y = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(x, frames)
        args = [*cmd, str(artifact), "--input", str(x), "--output", str(y)] + (["--all"] if all_steps else [])
        if state_in is not None:
            args += ["--state-in", str(state_in)]
        if state_out is not None:
            args += ["--state-out", str(state_out)]
        _run_runner(b, args, env)
        return np.load(y)


def info(b: Build, artifact: Path, qemu_cpu: str | None = None) -> dict[str, str]:
    """What the runner reads from ``artifact`` (``edgeseq-run --info``): d_in, d_out, batch, vocab, delay, fingerprint,
    and ``state``: ``swapped`` (the program writes the next state into the runner's second buffers) or ``copied``."""
    cmd, env = _command(b, qemu_cpu)
    words = _run_runner(b, [*cmd, str(artifact), "--info"], env).split()
    return dict(zip(words[::2], words[1::2]))


def check_device(artifact: Path, device: str, frames: np.ndarray, *, catalog_dirs=(), record: bool = True) -> dict:
    """Stream ``frames`` through ``artifact`` with the aarch64 runner under qemu with ``device``'s core, and compare
    with the same program on this machine's ExecuTorch (x86 kernels; the manifest records how that one compares
    with the eager step). The result goes into the manifest's ``parity_on`` (replacing an earlier one for the same
    device) when ``record``; ``passed`` says whether it is within the manifest's tolerance."""
    import edgeseq
    from edgeseq import manifest as man
    from edgeseq.devices.catalog import get_device, load_catalog
    from edgeseq.parity import compare

    model_file, man_path, m = man.resolve_artifact(artifact)
    if m["target"] != "executorch":
        raise ArtifactError(f"{artifact}: a {m['target']} artifact; the native runner streams ExecuTorch programs (.pte)")
    man.check_file(model_file, m)
    dev = get_device(device, load_catalog(catalog_dirs))
    if not dev.qemu_cpu:
        raise EdgeseqError(f"device {dev.name} has no qemu_cpu in its catalog entry: it is not an aarch64 CPU edgeseq can emulate")
    batch = int(m["batch"])
    if frames.ndim == 2 and batch > 1:  # one stream's frames, fed to every row of a program with a fixed batch
        frames = np.repeat(frames[:, None, :], batch, axis=1)
    b = build("aarch64")
    got = run(b, model_file, frames, dev.qemu_cpu)
    ref = edgeseq.open(model_file).run(frames)
    rep = compare(ref, got, what=f"aarch64 ({dev.qemu_cpu}, emulated) vs x86_64 ExecuTorch")
    tol = float(m["parity"]["tolerance"])
    # vs the eager step: the x86 program was within parity.max_scaled_error of it at export (over its own stream),
    # so ARM is within the sum (the triangle inequality, step by step); that bound must meet the tolerance
    export_err = float(m["parity"].get("max_scaled_error", m["parity"]["max_abs_error"]))
    bound = rep.max_scaled_error + export_err
    result = {"device": dev.name, "qemu_cpu": dev.qemu_cpu, "arch": "aarch64", "frames": int(len(frames)),
              "versus": "the same program on x86_64 ExecuTorch (its export parity vs the eager step is in 'parity')",
              "max_abs_error": rep.max_abs_error, "max_scaled_error": rep.max_scaled_error,
              "vs_eager_bound": bound, "tolerance": tol, "passed": bool(bound <= tol),
              "executorch": executorch_version()}
    if record:
        from edgeseq.fsutil import write_json_atomic

        others = [r for r in m.get("parity_on", []) if r.get("device") != dev.name]
        m["parity_on"] = others + [result]
        write_json_atomic(man_path, m)
    return result
