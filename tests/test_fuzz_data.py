"""Data files that must never crash a command: mutated .npy, .npz, .csv, .parquet and folders of series
(tests/fuzz_data.py: random bytes, rewritten .npy headers, truncation, zip directories, BOMs, mixed line endings,
very long lines, Latin-1 bytes), read by edgeseq.data.load in a child process that must exit 0 with one line per
case: ok, or the EdgeseqError. benchmarks/fuzz.py --kinds npy,npz,csv,parquet,folder runs 1,000 of each."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fuzz_data  # tests/fuzz_data.py

N = 30


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from extras import need  # tests/extras.py

    need("pandas", "parquet")
    return fuzz_data.sources(tmp_path_factory.mktemp("fuzz-data-src"))


@pytest.mark.parametrize("kind", fuzz_data.KINDS)
def test_mutated_data_files_end_in_ok_or_one_line_never_a_crash(sources, kind, tmp_path):
    cases = fuzz_data.make_cases(kind, sources[kind], tmp_path / kind, N, seed=1)
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("fuzz_data.py")), kind, *map(str, cases)],
                       capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, f"the process ended with {r.returncode} (negative: a signal): {r.stderr[-800:]}"
    lines = [line[len(fuzz_data.MARK):] for line in r.stdout.splitlines() if line.startswith(fuzz_data.MARK)]
    assert len(lines) == len(cases), r.stdout + r.stderr[-500:]
    assert all(line == "ok" or line.startswith("error: ") for line in lines), lines
    assert sum(line.startswith("error: ") for line in lines) >= N // 3, lines  # the mutations were seen
    assert all(len(line) < 600 for line in lines)  # one line, not a dump of the file


def test_the_sources_themselves_load():
    import tempfile

    import edgeseq.data

    with tempfile.TemporaryDirectory() as d:
        for kind, path in fuzz_data.sources(Path(d)).items():
            ds = edgeseq.data.load(path)
            assert ds.d_in == 12, kind


@pytest.fixture(scope="module")
def cli_fixture(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz-cli")
    fuzz_data.cli_fixture(out)
    return out


@pytest.mark.parametrize("kind", fuzz_data.KINDS)
def test_mutated_data_files_through_the_commands_end_in_ok_or_one_error_line(sources, cli_fixture, kind, tmp_path):
    # the commands that take this kind, in turn (train, quantize --calib, prune, stream --input, profile --input):
    # the child process raises (exit non-zero) on a traceback, another exit code, several lines or a half-written output
    cases = fuzz_data.make_cases(kind, sources[kind], tmp_path / kind, 2 * len(fuzz_data.commands_for(kind)), seed=3)
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("fuzz_data.py")), "--cli", str(cli_fixture), kind,
                        *map(str, cases)], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, f"the process ended with {r.returncode}: {r.stderr[-1500:]}"
    lines = [line[len(fuzz_data.MARK):] for line in r.stdout.splitlines() if line.startswith(fuzz_data.MARK)]
    assert len(lines) == len(cases), r.stdout + r.stderr[-500:]
    assert all(line.startswith(("ok ", "error: ")) for line in lines), lines
    names = {line.split()[1].rstrip(":") for line in lines}
    assert names == set(fuzz_data.commands_for(kind)), names  # every command was driven
    assert all(len(line) < 600 for line in lines)


def test_a_parquet_chunk_that_pyarrow_aborts_on_is_one_error_line(sources, tmp_path):
    # found by the 1,000-case data fuzz (seed 2, case 911): a column chunk whose size statistics pyarrow 26's Python
    # accessor throws through Cython on ("Definition level histogram size mismatch": terminate, SIGABRT); the footer
    # check reads a row of each column first, where the reader raises instead
    case = fuzz_data.make_cases("parquet", sources["parquet"], tmp_path / "c", 912, seed=2)[911]
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("fuzz_data.py")), "parquet", str(case)],
                       capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, f"the process ended with {r.returncode} (negative: a signal): {r.stderr[-800:]}"
    lines = [line[len(fuzz_data.MARK):] for line in r.stdout.splitlines() if line.startswith(fuzz_data.MARK)]
    assert len(lines) == 1 and lines[0].startswith(f"error: {case}: not a readable parquet file"), lines
