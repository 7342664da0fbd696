"""ProgramIO: how the ExecuTorch runtime feeds a program's inputs and reads its outputs (no ExecuTorch needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseq.errors import ArtifactError
from edgeseq.runtimes.et import TAIL_BYTES, ProgramIO, _tail_bytes, padded_copy, program_input


def _manifest(passthrough=None, channels_last=None):
    tensors = [{"name": "a.buf0", "shape": [2, 3, 4]}, {"name": "a.buf1", "shape": [2, 3, 4]},
               {"name": "h", "shape": [5]}]
    rt = {}
    if passthrough is not None:
        rt["passthrough_state"] = passthrough
    if channels_last is not None:
        rt["channels_last_state"] = channels_last
    return {"state_spec": {"tensors": tensors}, "runtime": rt}


def test_tail_bytes_counts_the_owning_buffer_after_the_array():
    owner = np.zeros(100, np.float32)
    assert _tail_bytes(owner) == 0
    assert _tail_bytes(owner[:90]) == 40  # 10 floats after it
    assert _tail_bytes(owner[10:20].reshape(2, 5)) == 80 * 4
    assert _tail_bytes(torch.zeros(4).numpy()) == -1  # owned by a tensor: unknown, so copied
    a = padded_copy(torch.randn(1, 3, 4, 5).contiguous(memory_format=torch.channels_last))
    assert _tail_bytes(a) >= TAIL_BYTES and a.strides == (240, 4, 60, 12)  # layout kept


def test_program_input_converts_only_what_the_program_cannot_read_in_place():
    ok = padded_copy(torch.randn(1, 3, 4, 5))
    a, t = program_input(ok)
    assert a is ok and t.data_ptr() == ok.__array_interface__["data"][0]  # no copy
    plain = np.random.default_rng(0).standard_normal((1, 3, 4, 5)).astype(np.float32)  # no tail of its own
    a, t = program_input(plain)
    assert a is not plain and _tail_bytes(a) >= TAIL_BYTES and np.array_equal(a, plain)
    a, t = program_input(ok, channels_last=True)  # NCHW given, NHWC wanted: converted, same values
    assert t.is_contiguous(memory_format=torch.channels_last) and np.array_equal(a, ok)
    b, _ = program_input(a, channels_last=True)
    assert b is a


def test_program_io_passes_shifted_state_along_and_reuses_what_it_gave_back():
    man = _manifest({"a.buf0": "a.buf1"}, ["a.buf0", "a.buf1"])
    io = ProgramIO(man)
    assert io.computed == [1, 2] and io.passed == [(0, 1)]
    rng = np.random.default_rng(0)
    state = [rng.standard_normal(s).astype(np.float32)[None] for s in ((2, 3, 4), (2, 3, 4), (5,))]
    x = rng.standard_normal((1, 7)).astype(np.float32)
    ins = io.inputs(x, state)
    assert len(ins) == 4 and np.array_equal(ins[0].numpy(), x)
    assert ins[1].is_contiguous(memory_format=torch.channels_last) and np.array_equal(ins[2].numpy(), state[1])
    # what a program computing buf1' = 2 * buf1 and h' = h + 1 would return (outputs: y, buf1', h')
    out = [torch.ones(1, 3), (ins[2] * 2).contiguous(memory_format=torch.channels_last), ins[3] + 1]
    y, new = io.outputs(out)
    assert np.array_equal(y, np.ones((1, 3)))
    assert new[0] is io._given[2][0] and np.array_equal(new[0], state[1])  # buf0' = buf1, by reference
    assert np.array_equal(new[1], 2 * state[1]) and np.array_equal(new[2], state[2] + 1)
    assert new[1].strides == out[1].numpy().strides  # channels-last kept
    assert all(_tail_bytes(a) >= TAIL_BYTES for a in new[1:])
    out[1].zero_()  # the program's memory is overwritten by its next call: the state must not change with it
    assert np.array_equal(new[1], 2 * state[1])
    ins2 = io.inputs(x, new)
    for i in range(3):  # handed over as they are
        assert ins2[1 + i].data_ptr() == new[i].__array_interface__["data"][0]
    with pytest.raises(ArtifactError, match="returned 2 outputs; its manifest expects 3"):
        io.outputs(out[:2])
    with pytest.raises(ArtifactError, match="takes 3 state tensors, got 2"):
        io.inputs(x, new[:2])


def test_program_io_refuses_a_manifest_naming_an_unknown_state():
    with pytest.raises(ArtifactError, match="passthrough_state names 'a.buf7'"):
        ProgramIO(_manifest({"a.buf0": "a.buf7"}))
    io = ProgramIO(_manifest())  # older manifests: every state is an output
    assert io.computed == [0, 1, 2] and io.passed == []


def test_program_io_reuses_an_output_array_only_when_nobody_holds_it():
    io = ProgramIO(_manifest())
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 7)).astype(np.float32)

    def call(state, k):  # a program whose next state is its state + k
        ins = io.inputs(x, state)
        return io.outputs([torch.zeros(1, 3), *(t + k for t in ins[1:])])[1]

    s0 = [np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 5), np.float32)]
    s1 = call(s0, 1.0)
    kept = s1  # the caller keeps the state of step 1
    s2 = call(s1, 1.0)
    s3 = call(s2, 1.0)
    assert all(np.array_equal(a, np.ones_like(a)) for a in kept)  # never written again while held
    assert all(np.array_equal(a, np.full_like(a, 3.0)) for a in s3)
    view = s3[2][0, :2]  # a view holds its base too
    ids3 = [id(a) for a in s3]
    s4 = call(s3, 1.0)
    del s3
    tensor = torch.from_numpy(s4[1])  # so does a tensor on it
    s5 = call(s4, 1.0)
    del s4
    call(s5, 1.0)
    call(s5, 1.0)
    assert np.array_equal(view, np.full(2, 3.0, np.float32)) and bool((tensor == 4.0).all())
    assert id(s5[0]) in ids3 and id(s5[2]) not in ids3  # s3's arrays were free again, except the viewed one
    assert all(np.array_equal(a, np.full_like(a, 5.0)) for a in s5)


def test_program_io_without_trustworthy_refcounts_never_reuses(monkeypatch):
    """Where reference counts cannot show a held reference (a free-threaded build), every call gets new arrays."""
    import edgeseq.runtimes.et as et

    monkeypatch.setattr(et, "_REFCOUNTS_TELL", False)
    io = ProgramIO(_manifest())
    x = np.zeros((1, 7), np.float32)
    state = [np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 5), np.float32)]
    states = [state]  # all kept alive, so that no id is recycled
    for k in range(4):
        ins = io.inputs(x, states[-1])
        states.append(io.outputs([torch.zeros(1, 3), *(t + 1 for t in ins[1:])])[1])
        assert all(np.array_equal(a, np.full_like(a, k + 1.0)) for a in states[-1])
    del states[0]
    bases = [id(a.base) for st in states for a in st]
    assert len(set(bases)) == len(bases)  # a new buffer every time
    assert all(not pool for pool in io._pools)  # nothing pooled
