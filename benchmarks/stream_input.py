"""`edgeseq stream --input` of a long recording: peak RSS of the command on a 4 MB and a 4 GB `.npy` of the same
frames' kind (float32, 4,096 features per frame), each in a fresh process, and the outputs of the big one compared
with a session fed the same frames (its first and last 2,000). Writes its section of docs/reliability.md.

Run: python benchmarks/stream_input.py [--quick] [--no-write]   (--quick: 4 MB against 256 MB)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import edgeseq  # noqa: E402
from _common import standard_args, write_section  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cli_rss import stream_peak  # noqa: E402  (tests/cli_rss.py)

ROOT = Path(__file__).resolve().parent.parent
D_IN = 4096


def write_npy(path: Path, frames: int, seed: int) -> None:
    """``frames`` x D_IN float32 frames written in blocks (the writer never holds the file)."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(frames, D_IN))
    for i in range(0, frames, 8192):
        out[i:i + 8192] = rng.standard_normal((min(8192, frames - i), D_IN), dtype=np.float32)
    out.flush()
    del out


def main() -> None:
    ap = standard_args(__doc__, "4 MB against 256 MB")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=D_IN, d_out=2, d_hidden=4)
    sizes = {"4 MB": 256, "256 MB" if args.quick else "4 GB": (1 << 14) if args.quick else (1 << 18)}
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("EDGESEQ_BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        art = edgeseq.export(edgeseq.convert(model), tmp / "wide", target="onnx", steps=20).path
        for i, (name, frames) in enumerate(sizes.items()):
            x_path = tmp / f"x{i}.npy"
            write_npy(x_path, frames, seed=i)
            t0 = time.perf_counter()
            peak = stream_peak(art, x_path, tmp / f"y{i}.npy")
            secs = time.perf_counter() - t0
            y = np.load(tmp / f"y{i}.npy", mmap_mode="r")
            x = np.load(x_path, mmap_mode="r")
            sess = edgeseq.open(art)
            head = np.stack([sess.push(np.asarray(f)) for f in x[:2000]])
            err = float(np.abs(y[:2000] - head).max())
            if frames > 4000:  # the tail: the session run over every frame between, outputs kept only at the end
                sess.reset()
                for f in x[:frames - 2000]:
                    sess.push(np.asarray(f))
                tail = np.stack([sess.push(np.asarray(f)) for f in x[frames - 2000:]])
                err = max(err, float(np.abs(y[frames - 2000:] - tail).max()))
            rows.append((name, x_path.stat().st_size, frames, peak, secs, err, len(y) == frames))
            del x, y
            x_path.unlink()
            print(rows[-1], file=sys.stderr)
    small = rows[0][3]
    lines = ["## `stream --input` of a long recording (`benchmarks/stream_input.py`)", "",
             f"`edgeseq stream ART --input X.npy --output Y.npy` in a fresh process (the CLI's `main`), an rnn step of "
             f"{D_IN:,} float32 features per frame (16 KiB a frame) exported to onnx; peak RSS is the process's VmHWM, "
             "imports included; the outputs compared with a session fed the same frames (the first and the last 2,000, "
             "the session run over every frame between). One run.", "",
             "| input | file | frames | peak RSS | over the 4 MB run | seconds | max abs error vs a session | every frame out |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, size, frames, peak, secs, err, whole in rows:
        lines.append(f"| {name} | {size / 2**20:,.0f} MiB | {frames:,} | {peak / 2**20:.0f} MiB | "
                     f"{(peak - small) / 2**20:+.0f} MiB | {secs:.0f} | {err:.1e} | {'yes' if whole else 'no'} |")
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "reliability.md", "stream-input", md)


if __name__ == "__main__":
    main()
