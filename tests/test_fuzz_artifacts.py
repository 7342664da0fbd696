"""Files that must never crash the process: mutated .pte, .onnx, model.safetensors and manifests (each manifest
rewritten to match its mutated file), loaded in a child process that must exit 0 (no signal, no stray exception)
with one line per case: ok, or the EdgeseqError. benchmarks/fuzz.py runs 1,000 of each kind."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import edgeseq

import fuzz_cases  # tests/fuzz_cases.py

N = {"pte": 12, "onnx": 24, "safetensors": 24, "manifest": 24}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    import warnings

    from extras import need  # tests/extras.py

    need("executorch", "executorch")
    need("onnxruntime", "onnx")
    d = tmp_path_factory.mktemp("fuzz-src")
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=4, d_out=3, d_hidden=8)
    edgeseq.save(model, d / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pte = edgeseq.export(edgeseq.convert(model), d / "m", target="executorch", steps=50).path
        onnx = edgeseq.export(edgeseq.convert(model), d / "m", target="onnx", steps=50).path
    return {"pte": pte, "onnx": onnx, "safetensors": d / "model", "manifest": pte}


@pytest.mark.parametrize("kind", fuzz_cases.KINDS)
def test_mutated_files_end_in_ok_or_one_line_never_a_crash(sources, kind, tmp_path):
    cases = fuzz_cases.make_cases(kind, Path(sources[kind]), tmp_path / kind, N[kind], seed=1)
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("fuzz_cases.py")), kind, *map(str, cases)],
                       capture_output=True, text=True, env={**__import__("os").environ, "EDGESEQ_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, f"the process ended with {r.returncode} (negative: a signal): {r.stderr[-500:]}"
    lines = [line[len(fuzz_cases.MARK):] for line in r.stdout.splitlines() if line.startswith(fuzz_cases.MARK)]
    assert len(lines) == len(cases), r.stdout + r.stderr[-500:]
    assert all(line == "ok" or line.startswith("error: ") for line in lines), lines
    assert sum(line.startswith("error: ") for line in lines) >= len(cases) // 3, lines  # the mutations were seen


def test_a_program_that_aborts_the_runtime_is_refused_in_one_line(tmp_path):
    """Found by the fuzz run: a .pte whose bytes make ExecuTorch abort (SIGABRT) is opened in a probe process first;
    this process gets an ArtifactError. Reproduced here with a stand-in runtime probe that aborts."""
    import json
    import os

    from edgeseq.errors import ArtifactError
    from edgeseq.runtimes import et

    art = tmp_path / "x.pte"
    art.write_bytes(b"\x00" * 64)
    manifest = {"file_sha256": "0" * 64}
    script = tmp_path / "abort.py"
    script.write_text("import os; os.abort()\n")
    old = et._PROBE
    et._PROBE = script.read_text()
    try:
        with pytest.raises(ArtifactError, match=r"crashes on this program \(SIGABRT in a probe process\)"):
            et.probe(art, manifest)
    finally:
        et._PROBE = old
    assert not et.is_trusted("0" * 64)
    json.dumps(manifest), os.getpid()  # this process is alive: the abort happened in the child
