"""Mutated artifacts for the fuzz test (tests/test_fuzz_artifacts.py) and benchmark (benchmarks/fuzz.py).

Each case is a copy of a real file with random bytes changed; a manifest is rewritten to match its mutated model
file (sha256 and size), so that the manifest check does not stop it and the runtime sees the bytes. ``run_cases``
loads each case in this process and returns one line per case: ``ok`` or ``error: <the EdgeseqError>``; anything
else (a traceback of another exception, a signal) is a crash the caller sees as a failed process.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

KINDS = ("pte", "onnx", "safetensors", "manifest")


def mutate(data: bytes, rng: random.Random, n: int = 8) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def make_cases(kind: str, source: Path, out: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` mutated copies of ``source`` (an artifact's model file, or a model directory for safetensors)."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n):
        if kind == "safetensors":
            d = out / f"case{i}"
            shutil.copytree(source, d, dirs_exist_ok=True)
            w = d / "model.safetensors"
            w.write_bytes(mutate(w.read_bytes(), rng))
            cases.append(d)
            continue
        man = json.loads(Path(f"{source}.edgeseq.json").read_text())
        p = out / f"case{i}{source.suffix}"
        data = source.read_bytes()
        if kind in ("pte", "onnx"):
            data = mutate(data, rng)
        p.write_bytes(data)
        man.update(file=p.name, file_sha256=hashlib.sha256(data).hexdigest(), file_bytes=len(data))
        text = json.dumps(man).encode()
        if kind == "manifest":
            text = mutate(text, rng, n=4)
        Path(f"{p}.edgeseq.json").write_bytes(text)
        cases.append(p)
    return cases


def outcomes(cases: list[Path], attempt, emit=None) -> list[str]:
    """``attempt(case)`` for each case: ``ok``, or ``error: <the EdgeseqError in one line>``; any other exception
    escapes (the caller counts the process's end as a crash). ``emit(line)``, where given, is called as each case
    ends (so a process that dies is blamed on the case it died in, not on the first of its chunk)."""
    import warnings

    from edgeseq.errors import EdgeseqError

    warnings.simplefilter("ignore")
    lines = []
    for c in cases:
        try:
            attempt(c)
            lines.append("ok")
        except EdgeseqError as exc:
            lines.append("error: " + " ".join(str(exc).split()))
        if emit is not None:
            emit(lines[-1])
    return lines


def run_cases(kind: str, cases: list[Path]) -> list[str]:
    import numpy as np

    import edgeseq

    def attempt(c):
        if kind == "safetensors":
            edgeseq.convert(edgeseq.load(c))
            return
        s = edgeseq.open(c)
        x = np.zeros((s.batch, 1), np.int64) if s.vocab_size else np.zeros((s.batch, s.d_in), np.float32)
        s.run(np.stack([x[0]] * 3))

    return outcomes(cases, attempt)


MARK = "CASE "  # the result lines on stdout (runtimes print their own lines there too: onnxruntime's EP errors)

if __name__ == "__main__":  # python tests/fuzz_cases.py KIND CASE...: one line per case on stdout, after MARK
    for line in run_cases(sys.argv[1], [Path(p) for p in sys.argv[2:]]):
        print(MARK + line, flush=True)
