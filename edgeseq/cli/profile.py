"""``edgeseq profile`` (measured streaming profile + per-device estimates, in one report) and ``edgeseq devices``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeseq.cli.common import handle_errors, out, progress_bar
from edgeseq.cli.dataopts import SOURCE_HELP, MaxMemory

_CATALOG_HELP = "Extra folder of device TOML files (repeatable; also EDGESEQ_DEVICES). A file named like a bundled device replaces it."


@handle_errors
def profile(
    artifacts: Annotated[list[Path], typer.Argument(help="Exported artifacts (.pte / .onnx, or their .edgeseq.json); several are compared side by side.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for report.json, report.md and report.html.")] = Path("out/profile"),
    device: Annotated[Optional[list[str]], typer.Option("--device", "-d", help="Catalog device to estimate (repeatable; default: every device in the catalog). `edgeseq devices` lists them.")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps of the stream (after warm-up); also the memory-vs-length stream.")] = 10_000,
    warmup: Annotated[int, typer.Option(min=0, help="Steps run before timing, not recorded.")] = 200,
    streams: Annotated[int, typer.Option(min=1, help="Independent sessions for the N-stream throughput.")] = 4,
    op_steps: Annotated[int, typer.Option(min=0, help="Steps of the per-operator pass (ETDump / onnxruntime profiling); 0 skips it.")] = 200,
    data: Annotated[Optional[str], typer.Option("--input", "--data", help=f"Real input frames for timing and parity, from the test split (series one after another): {SOURCE_HELP}. Default: seeded N(0, 1) frames.")] = None,
    reference: Annotated[Optional[Path], typer.Option(help="Model directory to check parity against (same inputs through its eager step).")] = None,
    parity_steps: Annotated[int, typer.Option(min=1, help="Steps compared with --reference.")] = 2_000,
    catalog: Annotated[Optional[list[Path]], typer.Option(help=_CATALOG_HELP)] = None,
    max_memory: MaxMemory = None,
    arm_parity: Annotated[bool, typer.Option("--arm-parity", help="Also stream each .pte on every estimated aarch64 device's arithmetic (the native runner under qemu, as edgeseq check-device; recorded in its manifest) and report it beside the estimate.")] = False,
) -> None:
    """Profile ARTIFACTS on this machine and estimate them on catalog devices; write report.json/.md/.html.

    Measured here: first and warm load, per-step latency samples (p50/p90/p99/max, jitter), throughput for 1 and
    N streams, peak RSS and resident memory along the stream (flat for a step artifact), the runtime's planned
    arena, state bytes, a per-operator breakdown and, with --reference, parity beside the speed. For every other
    device: a roofline-style estimate calibrated on this machine, labelled "estimate".
    """
    from edgeseq.fsutil import check_writable

    check_writable(out_dir, "--out")  # before any work
    from edgeseq.cli.common import must_exist

    must_exist(*artifacts)
    must_exist(reference, what="--reference")
    from edgeseq.devices.profiler import ProfileConfig
    from edgeseq.devices.report import run, write

    from edgeseq.data.sizes import parse_size

    cfg = ProfileConfig(steps=steps, warmup=warmup, streams=streams, op_steps=op_steps, parity_steps=parity_steps,
                        data=data, arm_parity=arm_parity,
                        max_memory=None if max_memory is None else parse_size(max_memory))
    with progress_bar() as p:
        task = p.add_task("starting", total=None)

        def tick(stage: str, i: int, n: int) -> None:
            p.update(task, description=stage, total=n or None, completed=i)

        report = run(artifacts, device, cfg, reference=reference, catalog_dirs=catalog or (), progress=tick)
    paths = write(report, out_dir)
    for c, prof in zip(report["comparison"], report["profiles"]):
        lat = prof["latency"]
        out.print(f"[bold]{c['label']}[/]: p50 {lat['p50_us']:.1f} µs, p99 {lat['p99_us']:.1f} µs, jitter {lat['cv']:.2f}, "
                  f"{c['streams_steps_per_s']:,.0f} steps/s over {prof['throughput']['streams']} streams; "
                  f"{prof['memory']['statement']}")
    n_est = sum(1 for e in report["estimates"] if e["available"])
    out.print(f"{n_est} device estimates (labelled estimate) | report: {paths['report.html']} (also report.json, report.md)")


@handle_errors
def devices(
    name: Annotated[Optional[str], typer.Argument(help="Show one device in full.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    catalog: Annotated[Optional[list[Path]], typer.Option(help=_CATALOG_HELP)] = None,
) -> None:
    """List the device catalog (one TOML file per device, with sources), or show one device."""
    from rich.table import Table

    from edgeseq.devices.catalog import get_device, load_catalog

    cat = load_catalog(catalog or ())
    if name:
        d = get_device(name, cat)
        if as_json:
            out.print_json(json.dumps(d.to_dict()))
            return
        out.print(f"[bold]{d.name}[/]: {d.title} ({d.path})")
        out.print(f"memory {d.memory_gb:g} GB {d.memory_type}, DRAM bandwidth "
                  f"{'%g GB/s' % d.bandwidth_gbs if d.bandwidth_gbs else 'not published'}"
                  + (f", power {'-'.join('%g' % w for w in d.power_w)} W" if d.power_w else ""))
        out.print(f"cpu: {d.cpu.cores}x {d.cpu.core} at {d.cpu.clock_ghz:g} GHz; per-core peak "
                  + ", ".join(f"{k} {d.cpu.peak_gflops(k):.1f} GFLOP/s" for k in d.cpu.flops_per_cycle))
        for a in d.accelerators.values():
            out.print(f"{a.name}: {a.title}; peak " + ", ".join(f"{k} {v:g} T" for k, v in a.peak_tflops.items()))
        out.print("runtimes: " + "; ".join(f"{k} on {v['unit']}" + (f" ({v['version']})" if v.get("version") else "")
                                           for k, v in d.runtimes.items()))
        for n in d.notes:
            out.print(f"note: {n}")
        for s in d.sources:
            out.print(f"source: {s}")
        return
    if as_json:
        out.print_json(json.dumps({k: d.to_dict() for k, d in cat.items()}))
        return
    n_cat = sum(1 for d in cat.values() if not d.measured)  # the host is this machine, not a catalog entry
    t = Table(title=f"device catalog ({n_cat} devices, and this machine as 'host'; add one as a TOML file, see "
                    "docs/profiling.md)")
    # the name is what --device takes: never cut or wrapped, whatever the width (other columns wrap whole words)
    t.add_column("name", no_wrap=True, min_width=max(len(d.name) for d in cat.values()))
    cols = ("device", "memory", "DRAM GB/s", "core fp32 GFLOP/s", "runtimes")
    for col in cols:
        t.add_column(col)
    rows = [(d.name, d.title, f"{d.memory_gb:g} GB" if d.memory_gb else "measured",
             f"{d.bandwidth_gbs:g}" if d.bandwidth_gbs else ("measured" if d.measured else "not published"),
             f"{d.cpu.peak_gflops('fp32'):.1f}" if d.cpu.peak_gflops("fp32") else "measured",
             ", ".join(f"{k} ({v['unit']})" for k, v in d.runtimes.items()))
            for d in sorted(cat.values(), key=lambda d: (not d.measured, d.name))]
    if not out.is_terminal:  # a pipe or a file: tab-separated lines, nothing wrapped or cut
        typer.echo("\t".join(("name",) + cols))
        typer.echo("\n".join("\t".join(r) for r in rows))
        return
    for r in rows:
        t.add_row(*r)
    out.print(t)
