"""Peak RSS of an ``edgeseq stream`` command run in a fresh process (the CLI's ``main``): used by
tests/test_data_sizes.py and benchmarks/stream_input.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import sys, warnings
warnings.simplefilter("ignore")
from edgeseq.cli.main import main
sys.argv = ["edgeseq", "stream", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the process that forked this one
print("peak", [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
"""


def stream_peak(art: Path, x: Path, y: Path, timeout: float | None = None) -> int:
    """``edgeseq stream ART --input X --output Y`` in a fresh process: its peak RSS in bytes (VmHWM, imports
    included). Raises RuntimeError with the end of its stderr when it fails."""
    r = subprocess.run([sys.executable, "-c", _CHILD, str(art), "--input", str(x), "--output", str(y)],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"stream --input {x} failed: {r.stderr[-2000:]}")
    return int(r.stdout.split("peak")[-1])
