"""Dependency-free SVG plots (line plots, histograms, horizontal bar charts): strings you can write or inline in HTML."""

from __future__ import annotations

import math
from typing import Sequence

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if 1e3 <= a < 1e6:
        return f"{v:,.0f}"
    return f"{v:.0e}" if a < 1e-2 or a >= 1e6 else f"{v:.3g}"


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str, ylabel: str,
    logy: bool = False, width: int = 720, height: int = 320, max_points: int = 1500,
    ylim: tuple[float, float] | None = None,
) -> str:
    """One SVG with a line per series (``{label: (xs, ys)}``); long series are thinned to ``max_points``.

    ``ylim`` fixes the y range (e.g. from 0, so a flat line reads as flat rather than as zoomed-in noise)."""
    left, right, top, bottom = 70, 20, 30, 45
    pw, ph = width - left - right, height - top - bottom
    pts = {}
    for label, (xs, ys) in series.items():
        step = max(1, len(xs) // max_points)
        pairs = [(float(x), float(y)) for x, y in zip(xs[::step], ys[::step]) if math.isfinite(float(y))]
        if logy:
            pairs = [(x, y) for x, y in pairs if y > 0]
        pts[label] = pairs
    allx = [x for p in pts.values() for x, _ in p] or [0.0, 1.0]
    ally = [y for p in pts.values() for _, y in p] or [1.0]
    fy = (lambda v: math.log10(v)) if logy else (lambda v: v)
    x0, x1 = min(allx), max(allx)
    y0, y1 = (fy(ylim[0]), fy(ylim[1])) if ylim else (fy(min(ally)), fy(max(ally)))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1

    def sx(x):
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return top + ph - (fy(y) - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{_esc(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
    for i in range(5):  # ticks
        fx = x0 + (x1 - x0) * i / 4
        out.append(f'<text x="{sx(fx):.1f}" y="{top + ph + 15}" text-anchor="middle">{_fmt(fx)}</text>')
        fyv = y0 + (y1 - y0) * i / 4
        yv = 10**fyv if logy else fyv
        ypix = top + ph - i / 4 * ph
        out.append(f'<text x="{left - 5}" y="{ypix + 4:.1f}" text-anchor="end">{_fmt(yv)}</text>')
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{ypix:.1f}" y2="{ypix:.1f}" stroke="#eee"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">{_esc(xlabel)}</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {top + ph / 2})">'
               f'{_esc(ylabel)}{" (log)" if logy else ""}</text>')
    for k, (label, p) in enumerate(pts.items()):
        color = _COLORS[k % len(_COLORS)]
        if p:
            d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{d}"/>')
        out.append(f'<text x="{left + 10}" y="{top + 15 + 14 * k}" fill="{color}">{_esc(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _frame(width: int, height: int, title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'font-family="sans-serif" font-size="11">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{_esc(title)}</text>']


def histogram(values: Sequence[float], *, title: str, xlabel: str, bins: int = 40, width: int = 720,
              height: int = 300, clip_quantile: float = 0.995) -> str:
    """Vertical-bar histogram; values above the ``clip_quantile`` go into the last bar (its label says so)."""
    vals = sorted(float(v) for v in values if math.isfinite(float(v)))
    if not vals:
        vals = [0.0]
    lo = vals[0]
    hi = vals[min(len(vals) - 1, int(clip_quantile * (len(vals) - 1)))]
    if hi <= lo:
        hi = lo + 1.0
    counts = [0] * bins
    for v in vals:
        counts[min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))] += 1
    left, right, top, bottom = 60, 20, 30, 45
    pw, ph = width - left - right, height - top - bottom
    cmax = max(counts) or 1
    out = _frame(width, height, title)
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    bw = pw / bins
    for i, c in enumerate(counts):
        h = c / cmax * ph
        out.append(f'<rect x="{left + i * bw:.1f}" y="{top + ph - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
                   f'fill="{_COLORS[0]}"><title>{c}</title></rect>')
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(f'<text x="{left + pw * i / 4:.1f}" y="{top + ph + 15}" text-anchor="middle">{_fmt(v)}</text>')
        out.append(f'<text x="{left - 5}" y="{top + ph - ph * i / 4 + 4:.1f}" text-anchor="end">{_fmt(cmax * i / 4)}</text>')
    over = sum(1 for v in vals if v > hi)
    note = f" ({over} above {_fmt(hi)} in the last bar)" if over else ""
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">{_esc(xlabel + note)}</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {top + ph / 2})">count</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, xlabel: str, logx: bool = False, width: int = 720,
              colors: Sequence[int] | None = None, fmt: str = "{:.3g}") -> str:
    """Horizontal bars, one per ``(label, value)``, with the value written at the bar's end.

    ``colors`` picks a palette index per bar (e.g. measured vs estimate)."""
    left, right, top, row = 260, 80, 30, 20
    height = top + row * max(1, len(items)) + 40
    pw = width - left - right
    vals = [float(v) for _, v in items if math.isfinite(float(v)) and (v > 0 or not logx)]
    vmax = max(vals) if vals else 1.0
    vmin = min(vals) if vals else 1.0
    if logx:
        lo, hi = math.log10(vmin) - 0.3, math.log10(vmax) + 0.05

        def sx(v):
            return (math.log10(v) - lo) / (hi - lo) * pw if v > 0 else 0.0
    else:

        def sx(v):
            return max(0.0, v) / (vmax or 1.0) * pw
    out = _frame(width, height, title)
    for i, (label, v) in enumerate(items):
        y = top + i * row
        color = _COLORS[(colors[i] if colors else 0) % len(_COLORS)]
        w = sx(float(v)) if math.isfinite(float(v)) else 0.0
        out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{_esc(_short(label, 40))}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{color}"/>')
        out.append(f'<text x="{left + w + 4:.1f}" y="{y + 14}">{_esc(fmt.format(float(v)))}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle">{_esc(xlabel)}{" (log)" if logx else ""}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
