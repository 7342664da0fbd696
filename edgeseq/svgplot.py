"""Dependency-free SVG line plots (drift curves, latency along a stream): a string you can write or inline in HTML."""

from __future__ import annotations

import math
from typing import Sequence

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.0e}" if a < 1e-2 or a >= 1e5 else f"{v:.3g}"


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str, ylabel: str,
    logy: bool = False, width: int = 720, height: int = 320, max_points: int = 1500,
) -> str:
    """One SVG with a line per series (``{label: (xs, ys)}``); long series are thinned to ``max_points``."""
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
    y0, y1 = fy(min(ally)), fy(max(ally))
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
