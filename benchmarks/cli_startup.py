"""Start-up of the command line: wall time of every command's --help (what importing the CLI costs), and of
``edgeseq stream`` / ``inspect`` on a small exported model, the ExecuTorch ones with the runtime imported as before
(``executorch.runtime`` pulling in the whole ``executorch.exir`` compiler) and as now (the bindings alone; see
``runtimes/et.py: import_runtime``). Fresh processes, median of several runs. Writes its section of docs/cli.md.

Run: python benchmarks/cli_startup.py [--quick] [--no-write]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import standard_args, write_section  # benchmarks/_common.py

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("train", "convert", "export", "quantize", "prune", "stream", "inspect", "profile", "devices", "quickstart")
EDGESEQ = [sys.executable, "-m", "edgeseq.cli.main"]


def wall(args: list[str], runs: int, env: dict | None = None) -> float:
    """Median seconds from start to exit of ``args`` in a fresh process (exit 0 required)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed: {r.stderr[-400:]}")
    return statistics.median(times)


def top_imports(args: list[str], env: dict | None = None, n: int = 3) -> str:
    """The ``n`` slowest top-level imports of a run (``python -X importtime``), cumulative ms."""
    r = subprocess.run([sys.executable, "-X", "importtime", *args[1:]], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    rows = []
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cum, raw = line[len("import time:"):].split("|")
            name = raw[1:]  # one space after the bar; more: imported by the module above (nested)
            if cum.strip().isdigit() and not name.startswith(" "):
                rows.append((int(cum), name.strip()))
    rows.sort(reverse=True)
    return ", ".join(f"{name} {cum / 1000:.0f} ms" for cum, name in rows[:n])


def main() -> None:
    args = standard_args(__doc__, "fewer runs").parse_args()
    runs = 3 if args.quick else 5
    import torch

    import edgeseq

    rows = []
    for cmd in COMMANDS:
        rows.append((f"edgeseq {cmd} --help", wall(EDGESEQ + [cmd, "--help"], runs)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        step = edgeseq.convert(edgeseq.build("rnn", d_in=12, d_out=9, d_hidden=32))
        pte = edgeseq.export(step, tmp / "m", target="executorch", steps=100).path
        onnx = edgeseq.export(step, tmp / "m", target="onnx", steps=100).path
        np.save(tmp / "x.npy", np.random.default_rng(0).standard_normal((200, 12)).astype(np.float32))
        stream = lambda art: EDGESEQ + ["stream", str(art), "-i", str(tmp / "x.npy"), "-o", str(tmp / "y.npy")]  # noqa: E731
        before = {"EDGESEQ_ET_FULL_IMPORT": "1"}
        cases = [("stream a .pte, 200 frames", stream(pte)), ("inspect a .pte (reads its manifest, loads no runtime)", EDGESEQ + ["inspect", str(pte)]),
                 ("stream a .onnx, 200 frames", stream(onnx))]
        timed = []
        for name, cmd in cases:
            et = ".pte" in name
            old = wall(cmd, runs, before) if et else None
            new = wall(cmd, runs)
            timed.append((name, old, new, top_imports(cmd, before) if et else "", top_imports(cmd)))
    lines = [
        "## Start-up (`benchmarks/cli_startup.py`)",
        "",
        f"Wall time from start to exit of a fresh `python -m edgeseq.cli.main` process, median of {runs} runs, on "
        f"this {os.cpu_count()}-core machine (torch {torch.__version__}). *Before*: the ExecuTorch runtime imported "
        "as edgeseq did until issue 20 (`executorch.runtime`, which imports the whole `executorch.exir` compiler); "
        "*now*: its bindings alone. Slowest imports from `python -X importtime` (cumulative).",
        "",
        "| command | before (s) | now (s) | speed-up | slowest imports before | slowest imports now |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, old, new, imp_old, imp_new in timed:
        lines.append(f"| {name} | {old:.2f} | {new:.2f} | **{old / new:.1f}x** | {imp_old} | {imp_new} |" if old else
                     f"| {name} | | {new:.2f} | | | {imp_new} |")
    lines += ["", "| command | s |", "|---|---:|"] + [f"| `{name}` | {t:.2f} |" for name, t in rows]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "cli.md", "startup", md)


if __name__ == "__main__":
    main()
