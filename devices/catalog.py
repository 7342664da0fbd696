"""The device catalog: one TOML file per device, read from the package and from user folders.

Adding a device needs no Python: drop a ``NAME.toml`` into a folder named by ``EDGESEQ_DEVICES`` (several
folders separated by ``os.pathsep``) or pass ``--catalog DIR`` to the CLI. A user file with the name of a
bundled device replaces it. Fields (see ``docs/profiling.md``):

- ``name`` (must equal the file's stem), ``title``, ``memory_gb``, ``memory_type``, ``bandwidth_gbs`` (DRAM;
  omitted where not published), ``power_w`` ([min, max] or []), ``sources`` (where each figure comes from),
  ``notes``, ``measured`` (true only for ``host``: figures replaced by measurements at profile time)
- ``[cpu]``: ``cores``, ``core``, ``clock_ghz``, ``flops_per_cycle`` = {fp32, fp16, int8} per core
- ``[accelerators.NAME]``: ``title``, ``peak_tflops`` = {precision: TFLOP/s or TOPS}
- ``[runtimes.NAME]``: ``unit`` ("cpu" or an accelerator name) and optional ``version``, ``backend``
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from edgeseq.errors import ConfigError, EdgeseqError

PRECISIONS = ("fp32", "fp16", "int8", "int8_sparse")


class UnknownDeviceError(EdgeseqError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Cpu:
    cores: int
    core: str
    clock_ghz: float
    flops_per_cycle: dict[str, float]

    def peak_gflops(self, precision: str) -> float | None:
        """Peak of one core (edgeseq's runtimes run one thread per stream): clock x FLOPs per cycle."""
        fpc = self.flops_per_cycle.get(precision)
        return None if fpc is None else self.clock_ghz * fpc


@dataclass(frozen=True)
class Accelerator:
    name: str
    title: str
    peak_tflops: dict[str, float]


@dataclass(frozen=True)
class Device:
    name: str
    title: str
    memory_gb: float
    cpu: Cpu
    runtimes: dict[str, dict[str, Any]]
    bandwidth_gbs: float | None = None
    memory_type: str = ""
    power_w: tuple[float, ...] = ()
    accelerators: dict[str, Accelerator] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    measured: bool = False
    path: str = ""
    qemu_cpu: str = ""  # the core qemu-aarch64 emulates for parity on this device's arithmetic ([cpu] qemu_cpu)

    def unit_for(self, runtime: str) -> str | None:
        """The compute unit ("cpu" or an accelerator name) this device runs ``runtime`` on, or None."""
        r = self.runtimes.get(runtime)
        return None if r is None else r["unit"]

    def peak_gflops(self, unit: str, precision: str) -> float | None:
        if unit == "cpu":
            return self.cpu.peak_gflops(precision)
        acc = self.accelerators.get(unit)
        v = None if acc is None else acc.peak_tflops.get(precision)
        return None if v is None else v * 1e3

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "memory_gb": self.memory_gb, "memory_type": self.memory_type,
            "bandwidth_gbs": self.bandwidth_gbs, "power_w": list(self.power_w),
            "cpu": {"cores": self.cpu.cores, "core": self.cpu.core, "clock_ghz": self.cpu.clock_ghz,
                    "flops_per_cycle": dict(self.cpu.flops_per_cycle)},
            "accelerators": {k: {"title": a.title, "peak_tflops": dict(a.peak_tflops)} for k, a in self.accelerators.items()},
            "runtimes": {k: dict(v) for k, v in self.runtimes.items()},
            "sources": list(self.sources), "notes": list(self.notes), "measured": self.measured,
            "qemu_cpu": self.qemu_cpu,
        }


def _num(d: dict, key: str, where: str, *, optional: bool = False, minimum: float = 0.0) -> float | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < minimum:
        raise ConfigError(f"{where}: '{key}' must be a number >= {minimum:g}, got {v!r}")
    return float(v)


def _precisions(d: Any, where: str) -> dict[str, float]:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: must be a table of precision = number")
    bad = [k for k in d if k not in PRECISIONS]
    if bad:
        raise ConfigError(f"{where}: unknown precision {bad[0]!r} (known: {', '.join(PRECISIONS)})")
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"{where}: {k} must be a positive number, got {v!r}")
    return {k: float(v) for k, v in d.items()}


def parse_device(data: dict[str, Any], where: str) -> Device:
    """A :class:`Device` from one TOML table; any missing or malformed field is a one-line :class:`ConfigError`."""
    for key in ("name", "title", "cpu", "runtimes"):
        if key not in data:
            raise ConfigError(f"{where}: missing field '{key}'")
    name = data["name"]
    if not isinstance(name, str) or not name or any(c.isspace() or c in "/\\" for c in name):
        raise ConfigError(f"{where}: 'name' must be a plain word, got {name!r}")
    measured = bool(data.get("measured", False))
    c = data["cpu"]
    if not isinstance(c, dict):
        raise ConfigError(f"{where}: [cpu] must be a table")
    cpu = Cpu(
        cores=int(_num(c, "cores", f"{where} [cpu]")), core=str(c.get("core", "")),
        clock_ghz=float(_num(c, "clock_ghz", f"{where} [cpu]")),
        flops_per_cycle=_precisions(c.get("flops_per_cycle", {}), f"{where} [cpu] flops_per_cycle"),
    )
    if not measured and (cpu.clock_ghz <= 0 or "fp32" not in cpu.flops_per_cycle):
        raise ConfigError(f"{where}: [cpu] needs clock_ghz > 0 and flops_per_cycle.fp32")
    accs = {}
    for aname, a in (data.get("accelerators") or {}).items():
        if not isinstance(a, dict):
            raise ConfigError(f"{where}: [accelerators.{aname}] must be a table")
        accs[aname] = Accelerator(aname, str(a.get("title", aname)),
                                  _precisions(a.get("peak_tflops", {}), f"{where} [accelerators.{aname}] peak_tflops"))
    runtimes = {}
    if not isinstance(data["runtimes"], dict):
        raise ConfigError(f"{where}: [runtimes] must be a table")
    for rname, r in data["runtimes"].items():
        if not isinstance(r, dict) or "unit" not in r:
            raise ConfigError(f"{where}: [runtimes] {rname} needs a 'unit' (cpu or an accelerator name)")
        if r["unit"] != "cpu" and r["unit"] not in accs:
            raise ConfigError(f"{where}: runtime {rname} runs on unit {r['unit']!r}, which is not cpu or one of its "
                              f"accelerators ({', '.join(accs) or 'none'})")
        runtimes[rname] = dict(r)
    power = data.get("power_w", [])
    if not isinstance(power, list) or not all(isinstance(p, (int, float)) for p in power):
        raise ConfigError(f"{where}: 'power_w' must be a list of numbers")
    bw = _num(data, "bandwidth_gbs", where, optional=True)
    return Device(
        name=name, title=str(data["title"]), memory_gb=float(_num(data, "memory_gb", where)), cpu=cpu,
        runtimes=runtimes, bandwidth_gbs=bw if bw else None, memory_type=str(data.get("memory_type", "")),
        power_w=tuple(float(p) for p in power), accelerators=accs,
        sources=tuple(str(s) for s in data.get("sources", [])), notes=tuple(str(s) for s in data.get("notes", [])),
        measured=measured, qemu_cpu=str(c.get("qemu_cpu", "")),
    )


def load_file(path: Path) -> Device:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    dev = parse_device(data, str(path))
    if dev.name != path.stem:
        raise ConfigError(f"{path}: name {dev.name!r} must match the file name ({path.stem!r})")
    return dataclasses.replace(dev, path=str(path))


def _bundled() -> list[Path]:
    root = resources.files("edgeseq.devices") / "catalog"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml"))


def user_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    env = [p for p in os.environ.get("EDGESEQ_DEVICES", "").split(os.pathsep) if p]
    return [Path(p) for p in [*env, *extra]]


def load_catalog(extra_dirs: Iterable[str | Path] = ()) -> dict[str, Device]:
    """Every device: the bundled files, then ``EDGESEQ_DEVICES`` folders, then ``extra_dirs`` (later ones win)."""
    devices: dict[str, Device] = {}
    for f in _bundled():
        d = load_file(f)
        devices[d.name] = d
    for folder in user_dirs(extra_dirs):
        if not folder.is_dir():
            raise ConfigError(f"device folder {folder} does not exist")
        for f in sorted(folder.glob("*.toml")):
            d = load_file(f)
            devices[d.name] = d
    return devices


def get_device(name: str, catalog: dict[str, Device] | None = None) -> Device:
    catalog = load_catalog() if catalog is None else catalog
    try:
        return catalog[name]
    except KeyError:
        raise UnknownDeviceError(f"unknown device {name!r}; known: {', '.join(sorted(catalog))} "
                                 "(add one as a TOML file, see docs/profiling.md)") from None
