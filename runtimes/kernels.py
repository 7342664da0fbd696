"""edgeseq's own ExecuTorch operators in this process: a program exported with ``custom_ops=True`` calls them.

Their kernels (``native/edgeseq_kernels.cpp``) are compiled with the native runner's toolchain into
``libedgeseq_kernels.so`` on first use (``runtimes/native.py``, cached) and loaded here before such a program is;
loading registers them with the ExecuTorch runtime of the Python bindings, which is the same
``libexecutorch.so``. The manifest lists the operators a program needs (``runtime.custom_ops``).
"""

from __future__ import annotations

import ctypes
import platform
import threading

from edgeseq.errors import ArtifactError, EdgeseqError

_LOCK = threading.Lock()
_LOADED: dict[str, object] = {}  # "lib": the loaded library, kept for the process's life; "ops": what it registers


def load_library() -> frozenset[str]:
    """Build (once, cached) and load the kernel library; the operators it registers."""
    with _LOCK:
        if "ops" not in _LOADED:
            from edgeseq.runtimes import native

            if platform.machine() not in ("x86_64", "AMD64"):  # as runtime "native" from Python (runtimes/inproc.py)
                raise EdgeseqError(f"edgeseq's kernels are compiled in this process on x86_64 hosts (this is "
                                   f"{platform.machine()}); on an aarch64 board, link libedgeseq_kernels.so from "
                                   "`edgeseq native build --arch aarch64` (docs/custom-ops.md)")
            path = native.build_kernels("x86_64")
            try:
                lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:  # a library another toolchain left in the cache, or a missing libexecutorch.so
                raise EdgeseqError(f"cannot load {path} ({' '.join(str(exc).split())}); delete it to rebuild") from None
            lib.edgeseq_kernels_ops.restype = ctypes.c_char_p
            _LOADED["lib"] = lib
            _LOADED["ops"] = frozenset(lib.edgeseq_kernels_ops().decode().split())
        return _LOADED["ops"]


def require(ops, path) -> None:
    """Load the kernels of ``ops`` (``edgeseq::name.overload``) before ``path`` is loaded; a one-line error where
    they cannot be built or this edgeseq has no such operator."""
    if not ops:
        return
    if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops):
        raise ArtifactError(f"{path}: manifest: runtime.custom_ops must be a list of operator names, got {ops!r:.80}")
    try:
        have = load_library()
    except EdgeseqError as exc:
        raise type(exc)(f"{path}: the program calls edgeseq's own operators ({', '.join(ops)}; exported with "
                        f"custom_ops=True), whose kernels must be compiled here first: {exc}") from None
    missing = [op for op in ops if op not in have]
    if missing:
        raise ArtifactError(f"{path}: the program calls {', '.join(missing)}, which this edgeseq's kernels do not "
                            f"provide (they provide {', '.join(sorted(have))}); re-export it with this version")
