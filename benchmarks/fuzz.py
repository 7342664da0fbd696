"""Fuzz: 1,000 mutated files of each kind (.pte, .onnx, model.safetensors, manifest; each manifest rewritten to match
its mutated file), loaded and stepped in child processes (tests/fuzz_cases.py), 50 per process: every case must
end as ok or one EdgeseqError line, and no process may die of a signal. Writes its section of docs/reliability.md.
The data kinds (npy, npz, csv, parquet, folder: tests/fuzz_data.py) mutate real data files and read them with
edgeseq.data.load, each process's peak RSS recorded.

Run: python benchmarks/fuzz.py [--quick] [--no-write] [--kinds pte,onnx,...|npy,npz,csv,parquet,folder]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

from _common import standard_args, write_section  # benchmarks/_common.py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import fuzz_cases  # noqa: E402  (tests/fuzz_cases.py)
import fuzz_data  # noqa: E402  (tests/fuzz_data.py)

CHUNK = 50


def run_kind(kind: str, cases: list[Path], env: dict, peaks: list | None = None, cli: Path | None = None) -> Counter:
    """``cli``: the data kinds through the commands that take data (tests/fuzz_data.py --cli, its fixture there)."""
    tally: Counter = Counter()
    data = kind in fuzz_data.KINDS
    driver = ROOT / "tests" / ("fuzz_data.py" if data else "fuzz_cases.py")
    route = ["--cli", str(cli)] if cli is not None else []
    for i in range(0, len(cases), CHUNK):
        chunk = cases[i:i + CHUNK]
        r = subprocess.run([sys.executable, str(driver), *route, kind, *map(str, chunk)], capture_output=True, text=True,
                           env=env)
        if peaks is not None:
            peaks += [int(line.split()[1]) * 1024 for line in r.stdout.splitlines() if line.startswith("PEAK ")]
        lines = [line[len(fuzz_cases.MARK):] for line in r.stdout.splitlines() if line.startswith(fuzz_cases.MARK)]
        if r.returncode != 0:  # the chunk's process died: count the case it died on as a crash, run the rest again
            tally["crash (signal or stray exception)" if r.returncode < 0 else f"crash (exit {r.returncode})"] += 1
            print(f"{kind}: process ended with {r.returncode} at case {chunk[len(lines)]}: {r.stderr[-300:]}", file=sys.stderr)
            tally.update(_kinds(lines))
            tally.update(run_kind(kind, chunk[len(lines) + 1:], env, peaks, cli))
            continue
        tally.update(_kinds(lines))
    return tally


def _kinds(lines: list[str]) -> list[str]:
    return ["ok" if line == "ok" or line.startswith("ok ") else "EdgeseqError" if line.startswith("error: ") else "other"
            for line in lines]


def main() -> None:
    ap = standard_args(__doc__, "100 cases of each kind")
    ap.add_argument("--kinds", default=",".join(fuzz_cases.KINDS),
                    help=f"comma-separated kinds: {', '.join(fuzz_cases.KINDS)} (artifacts, the default) or "
                         f"{', '.join(fuzz_data.KINDS)} (data files)")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    n = 100 if args.quick else 1000
    import edgeseq

    warnings.simplefilter("ignore")
    rows = []
    if all(k in fuzz_data.KINDS for k in kinds):
        return data_fuzz(kinds, n, args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = edgeseq.build("rnn", d_in=4, d_out=3, d_hidden=8)
        edgeseq.save(model, tmp / "model")
        pte = edgeseq.export(edgeseq.convert(model), tmp / "m", target="executorch", steps=50).path
        onnx = edgeseq.export(edgeseq.convert(model), tmp / "m", target="onnx", steps=50).path
        sources = {"pte": pte, "onnx": onnx, "safetensors": tmp / "model", "manifest": pte}
        env = {**os.environ, "EDGESEQ_CACHE": str(tmp / "cache")}
        for kind in kinds:
            cases = fuzz_cases.make_cases(kind, Path(sources[kind]), tmp / kind, n, seed=2)
            t0 = time.perf_counter()
            tally = run_kind(kind, cases, env)
            rows.append((kind, n, tally, time.perf_counter() - t0))
            print(kind, dict(tally), file=sys.stderr)
    lines = [
        "## Fuzz (`benchmarks/fuzz.py`)",
        "",
        f"{n:,} mutated files of each kind (8 random bytes changed; 4 in a manifest), each manifest rewritten to match "
        "its mutated model file (sha256, size) so that the bytes reach the runtime; each case loaded and stepped in a "
        f"child process ({CHUNK} per process). A crash is a process that died of a signal or of another exception.",
        "",
        "| kind | cases | ok | one-line EdgeseqError | other | crashes | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, count, t, secs in rows:
        crashes = sum(v for k, v in t.items() if k.startswith("crash"))
        lines.append(f"| {kind} | {count:,} | {t['ok']:,} | {t['EdgeseqError']:,} | {t['other']:,} | **{crashes}** | {secs:.0f} |")
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "reliability.md", "fuzz" if len(kinds) == len(fuzz_cases.KINDS) else f"fuzz-{'-'.join(kinds)}", md)


def data_fuzz(kinds: list[str], n: int, args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = fuzz_data.sources(tmp / "src")
        fuzz_data.cli_fixture(tmp / "cli")  # the model and artifact the commands take
        for kind in kinds:
            cases = fuzz_data.make_cases(kind, sources[kind], tmp / kind, n, seed=2)
            for route, cli in (("edgeseq.data.load", None), ("CLI: " + ", ".join(fuzz_data.commands_for(kind)), tmp / "cli")):
                peaks: list = []
                t0 = time.perf_counter()
                tally = run_kind(kind, cases, dict(os.environ), peaks, cli)
                rows.append((kind, route, n, tally, time.perf_counter() - t0, max(peaks, default=0)))
                print(kind, route, dict(tally), file=sys.stderr)
    lines = [
        "## Data fuzz (`benchmarks/fuzz.py --kinds npy,npz,csv,parquet,folder`)",
        "",
        f"{n:,} mutated data files of each kind, made from the bundled Japanese Vowels set (tests/fuzz_data.py: random "
        "bytes, rewritten .npy headers claiming huge, negative or odd shapes and dtypes, truncation, zip central "
        "directories and members, a BOM, mixed line endings, very long lines, Latin-1 bytes, odd values), each read "
        f"by `edgeseq.data.load` in a child process ({CHUNK} per process), then each through one of the commands "
        "that take its kind, in turn (`train --epochs 1`, `quantize --calib`, `prune --finetune-epochs 1`, `stream "
        "--input`, `profile --input`, on a tiny rnn classifier of the same 12 features and its ONNX artifact; typer's "
        "runner in the child process): a command must exit 0, or 1 with one `error:` line and nothing written where it "
        "writes. A crash is a process that died of a signal or of another exception (a traceback, another exit code, "
        "several lines, a half-written output); peak RSS is the largest of the processes' (VmHWM), imports included.",
        "",
        "| kind | through | cases | ok | one-line EdgeseqError | other | crashes | peak RSS | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, route, count, t, secs, peak in rows:
        crashes = sum(v for k, v in t.items() if k.startswith("crash"))
        lines.append(f"| {kind} | {route} | {count:,} | {t['ok']:,} | {t['EdgeseqError']:,} | {t['other']:,} | "
                     f"**{crashes}** | {peak / 2**20:.0f} MiB | {secs:.0f} |")
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "reliability.md", "fuzz-data", md)


if __name__ == "__main__":
    main()
