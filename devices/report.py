"""Profile reports: ``report.json`` (schema ``report.schema.json`` beside this file), ``report.md`` and a
self-contained ``report.html`` (:mod:`edgeseq.devices.html`).

:func:`run` is the whole job behind ``edgeseq profile``: measure the host, profile each artifact, estimate each
requested catalog device, build one report. :func:`write` writes the three files atomically (all or nothing).
"""

from __future__ import annotations

import datetime as _dt
import json
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from edgeseq.devices.catalog import Device, get_device, load_catalog
from edgeseq.devices.estimate import estimate, workload_of
from edgeseq.devices.profiler import ProfileConfig, profile

SCHEMA = "edgeseq.profile-report"
SCHEMA_VERSION = 1


def schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json``."""
    return json.loads((resources.files("edgeseq.devices") / "report.schema.json").read_text())


def _label(p: dict) -> str:
    a = p["artifact"]
    return f"{a['file']} ({a['runtime']}{', ' + a['quantization'] if a['quantization'] else ''})"


def run(
    artifacts: Sequence[str | Path], devices: Sequence[str] | None = None, cfg: ProfileConfig = ProfileConfig(), *,
    reference: str | Path | None = None, catalog_dirs: Sequence[str | Path] = (),
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Profile ``artifacts`` here and estimate them on ``devices`` (every catalog device when None).

    Unknown device names are refused before anything is measured."""
    from edgeseq import manifest as man
    from edgeseq.devices.host import measured_host

    catalog = load_catalog(catalog_dirs)
    names = [n for n in (devices if devices is not None else sorted(catalog)) if n != "host"]
    targets: list[Device] = [get_device(n, catalog) for n in names]
    manifests = []
    for a in artifacts:  # refuse bad artifacts before measuring anything
        f, _, m = man.resolve_artifact(a)
        man.check_file(f, m)
        manifests.append(m)
    if progress:
        progress("measuring the host", 0, 0)
    host, host_raw = measured_host(get_device("host", catalog))
    profiles = []
    for i, a in enumerate(artifacts):
        def tick(stage: str, k: int, n: int, _i=i, _a=a) -> None:
            if progress:
                progress(f"[{_i + 1}/{len(artifacts)}] {Path(_a).name}: {stage}", k, n)

        profiles.append(profile(a, cfg, reference=reference, progress=tick))
    estimates = []
    for p, m in zip(profiles, manifests):
        w = workload_of(m, p["artifact"]["bytes"])
        resident = p["artifact"]["bytes"] + (p["memory"]["planned_arena_bytes"] or 0) + p["memory"]["state_bytes_per_stream"]
        for d in targets:
            e = estimate(d, host, w, p["latency"]["p50_us"] / 1e6, memory_bytes=resident)
            estimates.append({"artifact": p["artifact"]["file"], "label_artifact": _label(p), **e})
    if cfg.arm_parity:  # the program on each device's ARM arithmetic (edgeseq check-device), beside its estimate
        from edgeseq.devices.profiler import make_inputs
        from edgeseq.runtimes.native import check_device

        for a, m in zip(artifacts, manifests):
            if m["target"] != "executorch":
                continue
            xs, _ = make_inputs(m, cfg, cfg.arm_frames)
            for d in targets:
                if not d.qemu_cpu:
                    continue
                if progress:
                    progress(f"ARM parity of {Path(a).name} on {d.name} (qemu -cpu {d.qemu_cpu})", 0, 0)
                r = check_device(Path(a), d.name, xs, catalog_dirs=catalog_dirs)
                for e in estimates:
                    if e["artifact"] == Path(a).name and e["device"] == d.name:
                        e["arm_parity"] = {k: r[k] for k in ("qemu_cpu", "frames", "max_scaled_error", "vs_eager_bound",
                                                              "tolerance", "passed")}
    return build(profiles, estimates, host, host_raw, names)


def build(profiles: list[dict], estimates: list[dict], host: Device, host_raw: dict, device_names: list[str]) -> dict[str, Any]:
    from edgeseq._version import __version__

    comparison = [{
        "label": _label(p), "file": p["artifact"]["file"], "runtime": p["artifact"]["runtime"],
        "quantization": p["artifact"]["quantization"], "bytes": p["artifact"]["bytes"],
        "p50_us": p["latency"]["p50_us"], "p99_us": p["latency"]["p99_us"], "cv": p["latency"]["cv"],
        "streams_steps_per_s": p["throughput"]["streams_steps_per_s"], "peak_rss_bytes": p["memory"]["peak_rss_bytes"],
        "state_bytes_per_stream": p["memory"]["state_bytes_per_stream"], "memory_flat": p["memory"]["flat"],
        "parity_max_abs_error": p["parity"].get("max_abs_error") if p["parity"]["available"] else None,
    } for p in profiles]
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "edgeseq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {**host.to_dict(), "measurements": host_raw},
        "devices": device_names, "profiles": profiles, "estimates": estimates, "comparison": comparison,
    }


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _bytes(v: int | None) -> str:
    if v is None:
        return "-"
    for unit, s in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(v) >= s:
            return f"{v / s:,.1f} {unit}"
    return f"{v:,} B"


ESTIMATE_HEAD = ["artifact", "device", "unit", "precision", "estimate p50 µs", "limited by", "ratio to host", "fits in memory"]


def estimate_cells(e: dict[str, Any]) -> list[str]:
    """One estimate as table cells (``ESTIMATE_HEAD``), for the Markdown and the HTML report alike."""
    if not e["available"]:
        return [e["label_artifact"], e["title"], "-", "-", "not estimated", e["reason"], "-", "-"]
    return [e["label_artifact"], e["title"], e["unit"], e["precision"], f"~{_us(e['p50_us'])} (estimate)",
            e["limited_by"], f"{e['ratio_to_host']:.2f}x", "yes" if e["fits_in_memory"] else "no"]


def estimate_notes(r: dict[str, Any]) -> list[str]:
    """The caveats of every available estimate, once each."""
    return sorted({n for e in r["estimates"] if e["available"] for n in e["notes"]})


def _delay_text(delay: int) -> str:
    return f"; delay {delay} steps (a stream's first {delay} outputs are not ready)" if delay else "; no delay"


def _cost_text(cost: dict | None) -> str:
    """FLOPs per step from the manifest, and for continual networks the offline model's cost per output."""
    if not cost:
        return "not counted (exported before edgeseq recorded costs)"
    text = f"{cost['flops_per_step']:,} FLOPs per step (counted from the graph: matmuls, convolutions, attention)"
    if cost.get("offline_flops_per_output"):
        text += (f"; recomputing the offline model over its {cost['offline_frames']} frames for each output: "
                 f"{cost['offline_flops_per_output']:,} FLOPs ({cost['offline_over_step']:g}x the step)")
    return text


def render_md(r: dict[str, Any]) -> str:
    h = r["host"]
    lines = [f"# edgeseq profile ({r['created']})", "",
             f"Measured on **{h['title']}**: {h['measurements']['cores']} cores, {h['memory_gb']} GB, measured "
             f"{h['measurements']['bandwidth_gbs']} GB/s copy bandwidth; one core's float32 peak "
             f"{h['measurements']['core_fp32_gflops']} GFLOP/s ({h['measurements']['core_fp32_peak']}), of which a "
             f"matmul reaches {h['measurements']['core_fp32_gflops_achieved']}.", "",
             "## Measured here", "",
             "| artifact | bytes | p50 µs | p90 µs | p99 µs | max µs | jitter (CV) | steps/s (1) | steps/s (N streams) "
             "| peak RSS | state B/stream | memory | parity max abs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["profiles"]:
        lat, mem, th = p["latency"], p["memory"], p["throughput"]
        par = p["parity"]
        par_cell = f"{par['max_abs_error']:.3g}" if par["available"] else f"export: {par['export_time']['max_abs_error']:.3g}"
        flat = "flat" if mem["flat"] else "GROWS" if mem["flat"] is False else "?"
        lines.append(
            f"| {_label(p)} | {p['artifact']['bytes']:,} | {_us(lat['p50_us'])} | {_us(lat['p90_us'])} | {_us(lat['p99_us'])} "
            f"| {_us(lat['max_us'])} | {lat['cv']:.3f} | {th['batch1_steps_per_s']:,.0f} | {th['streams_steps_per_s']:,.0f} "
            f"({th['streams']}) | {_bytes(mem['peak_rss_bytes'])} | {mem['state_bytes_per_stream']:,} | {flat} | {par_cell} |")
    for p in r["profiles"]:
        lat, mem, ld = p["latency"], p["memory"], p["load"]
        lines += ["", f"### {_label(p)}", "",
                  f"- inputs: {p['inputs']['what']}; {lat['steps']:,} timed steps after {lat['warmup']} warm-up steps "
                  f"({lat['timer']})",
                  f"- load: runtime import {ld['runtime_import_ms']:.1f} ms, first load {ld['first_load_ms']:.1f} ms, "
                  f"first step {ld['first_step_ms']:.2f} ms, warm load {ld['warm_load_ms']:.1f} ms",
                  f"- compute: {_cost_text(p['artifact']['cost'])}",
                  f"- state: {mem['state_bytes_per_stream']:,} bytes per stream" + _delay_text(p["artifact"]["delay"]),
                  f"- memory: {mem['statement']} Peak RSS {_bytes(mem['peak_rss_bytes'])} ({mem['peak_covers']}); "
                  f"planned arena {_bytes(mem['planned_arena_bytes'])}"
                  + (f" ({mem['arena_source']})" if mem["arena_source"] else ""),
                  "- parity: " + (f"{p['parity']['steps']:,} steps vs {p['parity']['reference']}: max abs error "
                                   f"{p['parity']['max_abs_error']:.3g} ({p['parity']['what']})" if p["parity"]["available"]
                                   else p["parity"]["reason"])]
        ops = p["operators"]
        if ops.get("available") and ops.get("call_p50_us"):
            lines.append(f"- the runtime's own trace of one call in the traced pass: p50 {ops['call_p50_us']:.1f} µs "
                         f"(untraced push: {lat['p50_us']:.1f} µs, which adds the session's Python side: input checks, "
                         "conversions, state copies; tracing adds its own cost)")
        if ops.get("available"):
            lines += ["", f"Operators ({ops['source']}, {ops['steps']} steps):", "", "| operator | type | mean µs | calls | share |",
                      "|---|---|---|---|---|"]
            for row in ops["rows"][:15]:
                lines.append(f"| {row['name']} | {row['op_type']} | {row['mean_us']:.2f} | {row['count']} | {row['share']:.1%} |")
        else:
            lines.append(f"- operators: {ops['reason']}")
    lines += ["", "## Estimates for other devices (estimate: not measured)", "",
              "Roofline-style bound from bytes moved per step and FLOPs per step, calibrated against the host "
              "measured above; see the notes.", "",
              "| " + " | ".join(ESTIMATE_HEAD) + " |", "|---" * len(ESTIMATE_HEAD) + "|"]
    lines += ["| " + " | ".join(estimate_cells(e)) + " |" for e in r["estimates"]]
    arm = [e for e in r["estimates"] if e.get("arm_parity")]
    if arm:
        lines += ["", "## Parity on each device's arithmetic (aarch64 native runner under qemu; time not measured)", "",
                  "| artifact | device | emulated CPU | frames | vs x86 (scaled) | vs eager, at most | within tolerance |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {e['label_artifact']} | {e['title']} | {e['arm_parity']['qemu_cpu']} | {e['arm_parity']['frames']:,} | "
                  f"{e['arm_parity']['max_scaled_error']:.2e} | {e['arm_parity']['vs_eager_bound']:.2e} | "
                  f"{'yes' if e['arm_parity']['passed'] else 'NO'} ({e['arm_parity']['tolerance']:g}) |" for e in arm]
    notes = estimate_notes(r)
    if notes:
        lines += ["", "Notes on the estimates:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write(r: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``out_dir`` (all three or none)."""
    from edgeseq.devices.html import render_html
    from edgeseq.fsutil import commit_files, staging_dir

    out_dir = Path(out_dir)
    texts = {"report.json": json.dumps(r, indent=1) + "\n", "report.md": render_md(r), "report.html": render_html(r)}
    with staging_dir(out_dir) as tmp:
        pairs = []
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8")
            pairs.append((tmp / name, out_dir / name))
        commit_files(pairs)
    return {k: out_dir / k for k in texts}
