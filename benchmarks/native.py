"""The native (C++) runner: per-step time on this x86 machine of a bare ``Method::execute``, of the runner's
``es_push`` (frame copy and check, execute, state hand-over) and of the Python ``StreamSession.push``, for a
2-unit RNN (the per-call floor), an LSTM 2x256 and a Mamba 4x256; and, for the aarch64 build under qemu, parity
only: emulated time means nothing and is not reported. Writes its section of docs/benchmarks.md, and the ARM
parity of every family and ExecuTorch scheme (cortex-a76, max) into docs/compression.md.

Run: python benchmarks/native.py [--quick] [--no-write]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import edgeseq  # noqa: E402
from _common import native_us, single_thread_quiet, standard_args, write_section  # noqa: E402
from edgeseq.data import load_dataset  # noqa: E402
from edgeseq.pipeline import real_stream  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def note(arm: list[tuple[str, str, float, float]]) -> str:
    """How to read the ARM parity table; the figures are this run's (the reasons were checked on ExecuTorch 1.5.1,
    qemu 7.2: re-read them after an upgrade)."""
    fp16 = [e for n, _, e, _ in arm if "fp16" in n]
    i8max = max(e for n, c, e, _ in arm if "int8-static" in n and c == "max")
    i8tol = next(t for n, _, _, t in arm if "int8-static" in n)
    return f"""Read from this table: fp32 programs differ from x86 only in the last bits (the kernels sum in another order). fp16
differs more ({min(fp16):.1e} to {max(fp16):.1e}): ARM cores with fp16 arithmetic compute the fp16 program's matmuls in fp16, where the
x86 kernels widen to fp32. int8-dynamic is identical to x86 to the last bits on both cores. int8-static on qemu's `max`
core (every Armv8/v9 feature, as current phone cores have) can differ by one grid step where XNNPACK selects other
int8 kernels whose requantization puts some values on the neighbouring grid point: {i8max:.1e} scaled here, inside the
scheme's {i8tol:g} tolerance (which exists for exactly this); a phone with those features may see the same, which is
why `edgeseq check-device` records the figure per device."""


def models() -> dict:
    torch.manual_seed(0)
    return {
        "RNN 1x2 (input 2): the per-call floor": edgeseq.build("rnn", d_in=2, d_out=2, d_hidden=2, cell="rnn_tanh"),
        "LSTM 2x256 (input 64)": edgeseq.build("rnn", d_in=64, d_out=16, d_hidden=256, num_layers=2),
        "Mamba 4x256 (input 64)": edgeseq.build("mamba", d_in=64, d_out=16, d_model=256, n_layers=4),
    }


def python_push_us(path: Path, n: int, rounds: int) -> float:
    sess = edgeseq.open(path)
    x = np.zeros((1, sess.d_in), np.float32)
    for _ in range(n):
        sess.push(x)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            sess.push(x)
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def arm_parity(b_arm, out: Path) -> list[tuple[str, str, float, float]]:
    """Every family at fp32 and the LSTM at every ExecuTorch scheme, on cortex-a76 and max, vs the x86 run."""
    from edgeseq.quant import Fp16Config, Int8DynamicConfig, Int8StaticConfig, quantize_
    from edgeseq.runtimes import native

    torch.manual_seed(0)
    fams = {"rnn (LSTM 2x16)": edgeseq.build("rnn", d_in=12, d_out=9, d_hidden=16, num_layers=2),
            "aaren": edgeseq.build("aaren", d_in=12, d_out=9, d_model=16, n_layers=1),
            "mamba": edgeseq.build("mamba", d_in=12, d_out=9, d_model=16, n_layers=1),
            "continual": edgeseq.build("continual", d_in=12, d_out=9, channels=(8, 8), kernel_size=3)}
    arts = {f"{k}, fp32": edgeseq.export(edgeseq.convert(m), out / k.split()[0], target="executorch", steps=200).path
            for k, m in fams.items()}
    lstm = fams["rnn (LSTM 2x16)"]
    for scheme, cfg in (("fp16", Fp16Config()), ("int8-dynamic", Int8DynamicConfig()), ("int8-static", Int8StaticConfig())):
        step = quantize_(edgeseq.convert(lstm), cfg, calib="japanese-vowels", target="executorch")
        arts[f"rnn (LSTM 2x16), {scheme}"] = edgeseq.export(step, out / f"rnn-{scheme}", target="executorch", steps=200).path
    frames = real_stream(load_dataset("japanese-vowels").test, 1000)
    rows = []
    for name, path in arts.items():
        ref = edgeseq.open(path).run(frames)
        tol = json.loads(Path(f"{path}.edgeseq.json").read_text())["parity"]["tolerance"]
        for cpu in ("cortex-a76", "max"):
            got = native.run(b_arm, path, frames, cpu)
            scaled = float((np.abs(got - ref).max(axis=1) / np.maximum(np.abs(ref).max(axis=1), 1.0)).max())
            rows.append((name, cpu, scaled, tol))
    return rows


def main() -> None:
    args = standard_args(__doc__, "fewer calls").parse_args()
    single_thread_quiet()
    from edgeseq.runtimes import native

    n, rounds = (2000, 3) if args.quick else (20000, 7)
    b = native.build("x86_64")
    b_arm = native.build("aarch64")
    timing = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for name, model in models().items():
            path = edgeseq.export(edgeseq.convert(model), out / f"m{len(timing)}", target="executorch", steps=200).path
            ex, pu = native_us(b, path, n, rounds)
            py = python_push_us(path, n // 4, rounds)
            timing.append((name, ex, pu, py))
        arm = arm_parity(b_arm, out)
    lines = [
        "## Native runner (`benchmarks/native.py`)",
        "",
        f"Per step on this machine ({platform.machine()}, 1 thread, batch 1, fp32, ExecuTorch "
        f"{native.executorch_version()} with XNNPACK), median of {rounds} runs of {n:,} calls: *execute* = a bare "
        "`Module::execute` on fixed inputs; *push* = the C ABI's `es_push` (frame check and copy, execute, state "
        "hand-over, the ready flag); *Python* = `StreamSession.push`.",
        "",
        "| model | execute µs | native push µs | push - execute µs | Python push µs | Python / native |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, ex, pu, py in timing:
        lines.append(f"| {name} | {ex:.2f} | {pu:.2f} | {pu - ex:+.2f} | {py:.2f} | **{py / pu:.1f}x** |")
    lines += ["", "The aarch64 build runs here only under qemu-aarch64: its time is emulation and is not reported; its "
                  "parity is (docs/compression.md, ARM parity)."]
    md = "\n".join(lines)
    arm_md = "\n".join([
        "## ARM parity (`benchmarks/native.py`, `edgeseq check-device`)",
        "",
        "The same ExecuTorch programs run by the aarch64 native runner under `qemu-aarch64 -cpu CPU` (ARM's XNNPACK "
        "kernels: NEON, dot-product int8, native fp16 arithmetic) against the x86_64 run, 1,000 real JapaneseVowels "
        "frames; max over steps of abs error / max(1, |x86 output|), beside the artifact's own export tolerance.",
        "",
        "| artifact | emulated CPU | ARM vs x86 (scaled) | tolerance |",
        "|---|---|---:|---:|",
        *[f"| {name} | {cpu} | {err:.2e} | {tol:g} |" for name, cpu, err, tol in arm],
        "",
        note(arm),
    ])
    print(md)
    print()
    print(arm_md)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", "native", md)
        write_section(ROOT / "docs" / "compression.md", "arm-parity", arm_md)


if __name__ == "__main__":
    main()
