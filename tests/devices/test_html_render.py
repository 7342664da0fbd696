"""The report's HTML opened in headless Chromium (Debian's ``chromium``, installed by ``.ci/run``), and the SVG plots."""

import os
import re
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

from edgeseq.svgplot import bar_chart, histogram

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Chromium (.ci/run); elsewhere its absence is a skip that says so, in CI a failure.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="headless Chromium not installed (apt-get install chromium; .ci/run installs it)")


def read_png(path):
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) into an (H, W, C) array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0
    c = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    out = np.zeros((h, w * c), dtype=np.int32)
    stride = w * c
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 255
        else:
            cur = np.zeros(stride, dtype=np.int32)
            for i in range(stride):
                a = cur[i - c] if i >= c else 0
                b = prev[i]
                cc = prev[i - c] if i >= c else 0
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:  # Paeth
                    p = a + b - cc
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else cc
                cur[i] = (line[i] + pred) & 255
        out[y] = cur
        prev = cur
    return out.reshape(h, w, c)[:, :, :3]


def screenshot(html_path, png, tmp_path, height=2400):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'chrome-profile'}", f"--window-size=1200,{height}", f"--screenshot={png}",
           html_path.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return read_png(png)


def blue_pixels(img):
    """Pixels of the plots' first colour (#1f77b4: bars of the histogram and of the host's measured p50)."""
    return int((np.abs(img - np.array([0x1F, 0x77, 0xB4])).sum(axis=2) < 30).sum())


@needs_chromium
def test_report_html_renders_in_headless_chromium(report, tmp_path):
    assert CHROMIUM, "Chromium is required in CI (.ci/run installs Debian's chromium package)"
    img = screenshot(report["dir"] / "report.html", tmp_path / "report.png", tmp_path)
    assert img.shape[1] == 1200
    nonwhite = float((img.sum(axis=2) < 3 * 235).mean())
    assert nonwhite > 0.03, f"page looks empty ({nonwhite:.1%} non-white)"
    assert blue_pixels(img) > 2000  # histogram bars and bar charts drawn
    # control: the same check on a page without plots finds no plot colour, so it can fail
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body><h1>no plots here</h1></body></html>")
    assert blue_pixels(screenshot(blank, tmp_path / "blank.png", tmp_path, height=600)) == 0


def test_histogram_counts_match_numpy():
    v = np.random.default_rng(3).exponential(10.0, size=5000) + 50
    svg = histogram(v, title="t", xlabel="µs", bins=20, clip_quantile=1.0)
    counts = [int(c) for c in re.findall(r"<title>(\d+)</title>", svg)]
    expected, _ = np.histogram(v, bins=20, range=(v.min(), v.max()))
    assert sum(counts) == 5000
    assert np.abs(np.array(counts) - expected).max() <= 1  # bin edges: floor vs numpy's closed last bin


def test_bar_chart_scales_bars_by_value():
    svg = bar_chart([("a", 10.0), ("b", 5.0), ("c", 2.5)], title="t", xlabel="x")
    widths = [float(w) for w in re.findall(r'<rect x="260" y="[\d.]+" width="([\d.]+)"', svg)]
    assert widths[0] == pytest.approx(2 * widths[1]) and widths[1] == pytest.approx(2 * widths[2])
