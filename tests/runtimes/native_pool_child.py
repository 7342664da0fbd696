"""Drives the native runtime's C pool (es_pool_*, runtimes/native/edgeseq.h) through ctypes, in a process of its own
(the C ABI alone, without edgeseq's Python around it; runtime "native" loads the same library into the Python
process, tests/runtimes/test_native_session.py). Used by tests/runtimes/test_native.py.

    python native_pool_child.py LIB PTE SLOTS SCRIPT.json FRAMES.npy OUT.npz

SCRIPT: a list of operations, run in order: ["join"], ["join_state", "file.esstate"], ["leave", slot,
"file.esstate" or null], ["step", [slots...], row] (the frames of FRAMES.npy[row] for those slots, FRAMES of shape
(rows, slots, d_in)), ["expect_error", code, op...] (op must fail with that code; the state must not change).
OUT.npz holds y_<op index> (n, d_out), ready_<op index> and slot_<op index> for joins."""

import ctypes
import json
import sys

import numpy as np


def main() -> int:
    lib_path, pte, slots, script, frames_path, out_path = sys.argv[1:7]
    lib = ctypes.CDLL(lib_path)
    P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)
    lib.es_pool_open.argtypes = [ctypes.c_char_p, I, ctypes.POINTER(P)]
    lib.es_pool_close.argtypes = [P]
    lib.es_pool_d_out.argtypes = [P]
    lib.es_pool_join.argtypes = [P, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(I)]
    lib.es_pool_leave.argtypes = [P, I, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    lib.es_pool_state_bytes.argtypes = [P, ctypes.POINTER(ctypes.c_size_t)]
    lib.es_pool_step.argtypes = [P, I, ctypes.POINTER(I), F, F, ctypes.POINTER(I)]
    lib.es_pool_steps.argtypes = [P, I]
    lib.es_pool_steps.restype = ctypes.c_int64
    lib.es_last_error.restype = ctypes.c_char_p

    pool = P()
    if lib.es_pool_open(pte.encode(), int(slots), ctypes.byref(pool)):
        print("error:", lib.es_last_error().decode())
        return 1
    frames = np.load(frames_path).astype(np.float32)
    d_out = lib.es_pool_d_out(pool)
    size = ctypes.c_size_t()
    lib.es_pool_state_bytes(pool, ctypes.byref(size))
    out = {}

    def run(i, op):
        kind = op[0]
        if kind in ("join", "join_state"):
            data = open(op[1], "rb").read() if kind == "join_state" else None
            slot = I()
            rc = lib.es_pool_join(pool, data, len(data) if data else 0, ctypes.byref(slot))
            out[f"slot_{i}"] = np.array(slot.value)
            return rc
        if kind == "leave":
            buf = ctypes.create_string_buffer(size.value) if op[2] else None
            n = ctypes.c_size_t()
            rc = lib.es_pool_leave(pool, op[1], buf, size.value if buf else 0, ctypes.byref(n))
            if rc == 0 and op[2]:
                open(op[2], "wb").write(buf.raw[: n.value])
            return rc
        if kind == "step":
            slots_ = (I * len(op[1]))(*op[1])
            x = np.ascontiguousarray(frames[op[2], op[1]] if len(op) < 4 else np.full((len(op[1]), frames.shape[2]), op[3], np.float32))
            y = np.zeros((len(op[1]), d_out), np.float32)
            ready = (I * len(op[1]))()
            rc = lib.es_pool_step(pool, len(op[1]), slots_, x.ctypes.data_as(F), y.ctypes.data_as(F), ready)
            if rc == 0:
                out[f"y_{i}"], out[f"ready_{i}"] = y, np.array(list(ready))
            return rc
        raise ValueError(kind)

    for i, op in enumerate(json.load(open(script))):
        if op[0] == "expect_error":
            rc = run(i, op[2:])
            out[f"error_{i}"] = np.array(rc)
            out[f"message_{i}"] = np.array(lib.es_last_error().decode())
            continue
        rc = run(i, op)
        if rc:
            print(f"error: op {i} {op}: {lib.es_last_error().decode()}")
            return 1
    out["steps"] = np.array([lib.es_pool_steps(pool, s) for s in range(int(slots))])
    lib.es_pool_close(pool)
    np.savez(out_path, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
