"""``report.html``: one self-contained page (inline CSS and SVG; no script, font or image from a network).

Plots per artifact: latency histogram, latency along the stream, resident memory vs stream length, per-operator
bars. Across artifacts: measured p50 side by side, and a cross-device comparison of the measured host with
every estimated device (estimates drawn in another colour and labelled "estimate").
"""

from __future__ import annotations

import html
from typing import Any

from edgeseq.devices.report import (ESTIMATE_HEAD, _bytes, _cost_text, _delay_text, _label, _us, estimate_cells,
                                    estimate_notes)
from edgeseq.svgplot import bar_chart, histogram, line_plot

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;line-height:1.4}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}h3{font-size:16px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.est{color:#8c564b;font-style:italic}
.ok{color:#2ca02c;font-weight:bold}.bad{color:#d62728;font-weight:bold}.plots svg{margin:6px 0;display:block}
.note{font-size:12px;color:#555}
"""


def _e(s: Any) -> str:
    return html.escape(str(s))


def _table(head: list[str], rows: list[list[Any]], est_col: int | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f'<td{" class=est" if i == est_col else ""}>{_e(c)}</td>' for i, c in enumerate(r)) + "</tr>")
    return "\n".join(out) + "</table>"


def _parity_text(par: dict[str, Any]) -> str:
    if not par["available"]:
        return par["reason"]
    return f"{par['steps']:,} steps vs {par['reference']}: max abs error {par['max_abs_error']:.3g} ({par['what']})"


def _profile_section(p: dict[str, Any]) -> str:
    lat, mem, ld, ops, par = p["latency"], p["memory"], p["load"], p["operators"], p["parity"]
    a = p["artifact"]
    samples = lat["samples_us"]
    parts = [f"<h3>{_e(_label(p))}</h3>",
             f"<p>{_e(a['family'])} on {_e(a['runtime'])} {_e(a['runtime_version'] or '')}; {a['bytes']:,} bytes; inputs: "
             f"{_e(p['inputs']['what'])}; {lat['steps']:,} timed steps after {lat['warmup']} warm-up steps.</p>",
             _table(["load", "value"], [["runtime import (ms)", f"{ld['runtime_import_ms']:.1f}"],
                                        ["first load (ms)", f"{ld['first_load_ms']:.1f}"], ["first step (ms)", f"{ld['first_step_ms']:.2f}"],
                                        ["warm load (ms)", f"{ld['warm_load_ms']:.1f}"]]),
             f"<p>Compute: {_e(_cost_text(a['cost']))}. State: {mem['state_bytes_per_stream']:,} bytes per stream"
             f"{_e(_delay_text(a['delay']))}.</p>",
             f'<p class="{"ok" if mem["flat"] else "bad"}">{_e(mem["statement"])}</p>',
             f"<p>Parity: {_e(_parity_text(par))}</p>",
             '<div class="plots">',
             histogram(samples, title=f"step latency, {lat['steps']:,} steps", xlabel="µs per step"),
             line_plot({"per step": (list(range(len(samples))), samples)}, title="latency along the stream",
                       xlabel="step", ylabel="µs"),
             line_plot({"resident memory (MiB)": ([s for s, _ in mem["rss_along_stream"]],
                                                  [b / (1 << 20) for _, b in mem["rss_along_stream"]])},
                       title="memory vs stream length", xlabel="steps streamed", ylabel="MiB",
                       ylim=(0.0, 1.15 * max(b for _, b in mem["rss_along_stream"]) / (1 << 20))),
             ]
    if ops.get("available") and ops["rows"]:
        rows = ops["rows"][:15]
        parts.append(bar_chart([(f"{r['name']} [{r['op_type']}]" if r["op_type"] else r["name"], r["mean_us"]) for r in rows],
                               title=f"per operator, mean µs per call ({ops['source']})", xlabel="µs", fmt="{:.2f}"))
    parts.append("</div>")
    if not ops.get("available"):
        parts.append(f"<p class=note>Operators: {_e(ops['reason'])}</p>")
    else:
        if ops.get("call_p50_us"):
            parts.append(f"<p>The runtime's own trace of one call in the traced pass: p50 {ops['call_p50_us']:.1f} µs "
                         f"(untraced push: {lat['p50_us']:.1f} µs, which adds the session's Python side: input checks, "
                         "conversions, state copies; tracing adds its own cost).</p>")
    if ops.get("available") and ops.get("note"):
        parts.append(f"<p class=note>{_e(ops['note'])}</p>")
    return "\n".join(parts)


def render_html(r: dict[str, Any]) -> str:
    h = r["host"]
    m = h["measurements"]
    body = [f"<h1>edgeseq profile</h1><p class=note>created {_e(r['created'])} by edgeseq {_e(r['edgeseq_version'])}; "
            f"report schema {r['schema_version']}</p>",
            f"<p>Measured on <b>{_e(h['title'])}</b>: {m['cores']} cores, {h['memory_gb']} GB; measured {m['bandwidth_gbs']} "
            f"GB/s copy bandwidth; one core's float32 peak {m['core_fp32_gflops']} GFLOP/s ({_e(m['core_fp32_peak'])}), of "
            f"which a matmul reaches {m['core_fp32_gflops_achieved']}.</p>",
            "<h2>Measured here</h2>",
            _table(["artifact", "bytes", "p50 µs", "p90 µs", "p99 µs", "max µs", "jitter (CV)", "steps/s (N streams)",
                    "peak RSS", "state B/stream", "memory"],
                   [[c["label"], f"{c['bytes']:,}", _us(p["latency"]["p50_us"]), _us(p["latency"]["p90_us"]),
                     _us(p["latency"]["p99_us"]), _us(p["latency"]["max_us"]), f"{c['cv']:.3f}",
                     f"{c['streams_steps_per_s']:,.0f} ({p['throughput']['streams']})", _bytes(c["peak_rss_bytes"]),
                     f"{c['state_bytes_per_stream']:,}", "flat" if c["memory_flat"] else "GROWS"]
                    for c, p in zip(r["comparison"], r["profiles"])])]
    if len(r["profiles"]) > 1:
        body.append('<div class="plots">' + bar_chart([(c["label"], c["p50_us"]) for c in r["comparison"]],
                                                      title="measured p50 per step, side by side", xlabel="µs") + "</div>")
    for p in r["profiles"]:
        body.append(_profile_section(p))
    body.append("<h2>Cross-device comparison (estimates)</h2>")
    body.append("<p class=est>Everything in this section except the host rows is an estimate, not a measurement.</p>")
    items, colors, rows = [], [], []
    for p in r["profiles"]:
        items.append((f"{p['artifact']['file']} · host (measured)", p["latency"]["p50_us"]))
        colors.append(0)
        for e in r["estimates"]:
            if e["artifact"] != p["artifact"]["file"]:
                continue
            if e["available"]:
                items.append((f"{e['artifact']} · {e['device']} (estimate)", e["p50_us"]))
                colors.append(5)
            rows.append(estimate_cells(e))
    if items:
        body.append('<div class="plots">' + bar_chart(items, title="p50 µs per step: host measured (blue), devices estimated (brown)",
                                                      xlabel="µs per step", logx=True, colors=colors) + "</div>")
    body.append(_table(ESTIMATE_HEAD, rows, est_col=4))
    body += [f"<p class=note>{_e(n)}</p>" for n in estimate_notes(r)]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>edgeseq profile</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
