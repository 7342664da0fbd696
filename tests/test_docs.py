"""Every ```python block in README.md and docs/*.md runs as written (in a scratch folder), and every figure it
prints is checked against what the page says it prints.

A print statement carries its expectation in a comment ``#=> SPEC``, on its line or alone on the next (``  # note``
may follow). SPEC is the printed line with holes for the figures that vary from run to run: ``{<=1e-5}``, ``{>=0.9}``,
``{0.5..1}`` (a number within bounds), ``{*}`` (anything: machine-dependent figures such as latencies). A block whose
figures cannot be stated is marked ``<!-- doc-test: illustrative -->`` on the line before its fence; any other block
with an unannotated print fails, so a page cannot quietly print a figure nobody checks."""

import ast
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(<!-- doc-test: illustrative -->\n)?```python\n(.*?)```", flags=re.S)
BLOCKS = [
    pytest.param(m.group(2), bool(m.group(1)), id=f"{page.name}#{i}")
    for page in PAGES
    for i, m in enumerate(FENCE.finditer(page.read_text()))
]
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# a hole: {*}, {<=X}, {>=X} or {LO..HI}; any other braces (a printed dict) are literal text
HOLE = re.compile(r"\{(\*|<=[^{}]+|>=[^{}]+|[-+0-9.eE]+\.\.[-+0-9.eE]+)\}")

RUNNER = r'''
import builtins, json, sys
_records, _print = [], builtins.print
def _recording_print(*args, sep=" ", **kw):
    frame = sys._getframe(1)
    if frame.f_code.co_filename == "<doc>":
        _records.append((frame.f_lineno, sep.join(str(a) for a in args)))
    _print(*args, sep=sep, **kw)
builtins.print = _recording_print
code = open(sys.argv[1]).read()
exec(compile(code, "<doc>", "exec"), {"__name__": "__main__"})
json.dump(_records, open(sys.argv[2], "w"))
'''


def hole_matches(spec: str, value: str) -> bool:
    if spec == "*":
        return True
    v = float(value)
    if spec.startswith("<="):
        return abs(v) <= float(spec[2:])
    if spec.startswith(">="):
        return v >= float(spec[2:])
    lo, hi = spec.split("..")
    return float(lo) <= v <= float(hi)


def line_matches(spec: str, printed: str) -> bool:
    """``spec`` (holes in braces) against one printed line, whitespace runs equal."""
    parts = HOLE.split(spec.strip())
    pattern = "".join(re.escape(re.sub(r"\s+", " ", p)) if i % 2 == 0 else
                      (r"(.*?)" if p == "*" else f"({NUMBER})") for i, p in enumerate(parts))
    m = re.fullmatch(pattern, " ".join(printed.split()))
    return m is not None and all(hole_matches(h, g) for h, g in zip(parts[1::2], m.groups()))


def expectations(code: str) -> tuple[dict[tuple[int, int], str], list[int]]:
    """{(first line, last line) of a print statement: its spec} and the lines of prints that carry none."""
    lines = code.splitlines()
    found, bare = {}, []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            span = (node.lineno, node.end_lineno)
            after = span[1] + 1 if span[1] < len(lines) and lines[span[1]].lstrip().startswith("#=>") else span[1]
            specs = [m.group(1) for n in range(span[0], after + 1)
                     for m in [re.search(r"#=>\s?(.*?)(?:\s{2,}#.*)?$", lines[n - 1])] if m]
            if specs:
                found[span] = specs[0]
            else:
                bare.append(node.lineno)
    return found, bare


def test_docs_have_examples():
    assert len(BLOCKS) >= 6


def test_spec_matcher():
    assert line_matches("{<=1e-5}", "3.2e-07") and not line_matches("{<=1e-5}", "0.002")
    assert line_matches("('h0', 'c0') 512", "('h0',  'c0') 512") and not line_matches("('h0', 'c0') 512", "('h0', 'c0') 513")
    assert line_matches("p50 {*} us", "p50 12.5 us") and line_matches("{0.5..1} ok", "0.75 ok")
    assert not line_matches("{0.5..1} ok", "1.5 ok") and not line_matches("{>=0.9}", "0.89")
    assert line_matches("{'quantize': 4} {<=1}", "{'quantize': 4} 0.5") and not line_matches("{'q': 4}", "{'q': 5}")


@pytest.mark.parametrize("code,illustrative", BLOCKS)
def test_doc_example_runs_and_prints_what_it_says(code, illustrative, tmp_path):
    specs, bare = expectations(code)
    assert illustrative or not bare, (f"print on block line(s) {bare} has no '#=> ...' expectation; state what it "
                                      "prints or mark the block <!-- doc-test: illustrative -->")
    (tmp_path / "block.py").write_text(code)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-c", RUNNER, "block.py", "printed.json"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    printed = json.loads((tmp_path / "printed.json").read_text())
    for (first, last), spec in specs.items():
        got = [text for line, text in printed if first <= line <= last]
        assert got, f"the print on block line {first} printed nothing"
        for text in got:
            assert line_matches(spec, text), f"block line {first} printed {text!r}; the page says {spec!r}"
