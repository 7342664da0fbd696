"""Process memory from ``/proc/self/status`` (Linux): resident set now (VmRSS) and its peak (VmHWM).

``reset_peak()`` writes ``5`` to ``/proc/self/clear_refs``, which resets VmHWM to the current RSS (Linux >= 4.0),
so a profile's peak covers its own load and stream, not what the process did before. Where that file is not
writable the peak covers the whole process, and the report says so.
"""

from __future__ import annotations

import resource
import sys


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    return _status("VmRSS")


def peak_rss_bytes() -> int | None:
    v = _status("VmHWM")
    if v is None:  # not Linux: ru_maxrss is kB on Linux, bytes on macOS
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r if sys.platform == "darwin" else r * 1024)
    return v


def reset_peak() -> bool:
    """Reset the peak RSS to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
