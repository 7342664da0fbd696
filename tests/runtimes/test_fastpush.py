"""The bound push step in C (runtimes/fastpush.py, runtimes/native/fastpush.c) against the same step in numpy.

ExecuTorch's copies around its call (``Relay``) in their order; its finite check against ``np.isfinite`` on every
kind of float32 bit pattern; a session stepping through it
against one stepping through numpy (the extension unloaded), on onnxruntime and ExecuTorch: bit-identical outputs
over 2,000 steps, strided frames and token ids, and the same refusals at the same steps (a NaN frame, an overflow
that keeps the state from before it). Where no compiler is found the extension is not built and push still works."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import edgeseq
from edgeseq.errors import InputError, NumericalError
from edgeseq.runtimes import fastpush

T = 2000


@pytest.fixture(scope="module")
def ext():
    module = fastpush.load()
    assert module is not None, fastpush.status()  # .ci/run installs gcc; the Python headers come with Python
    return module


def _numpy_only(monkeypatch):
    monkeypatch.setitem(fastpush._state, "module", None)
    monkeypatch.setitem(fastpush._state, "why", "unloaded by the test")


def test_all_finite_reads_every_bit_pattern_as_numpy_does(ext):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=100_000, dtype=np.uint64).astype(np.uint32)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1.1754942e-38],
                        np.float32)
    for n in (1, 7, 8, 9, 63, 1000):
        for _ in range(40):
            a = bits[rng.integers(0, bits.size - n):][:n].view(np.float32).copy()
            assert ext.all_finite(a) == bool(np.isfinite(a).all())
            a = rng.standard_normal(n).astype(np.float32)
            assert ext.all_finite(a)
            a[rng.integers(0, n)] = specials[rng.integers(0, specials.size)]
            assert ext.all_finite(a) == bool(np.isfinite(a).all())


def test_relay_copies_in_then_calls_then_copies_out(ext):
    rng = np.random.default_rng(2)
    a_src, b_src = rng.standard_normal(7).astype(np.float32), np.arange(3, dtype=np.int64)
    a_dst, b_dst = np.zeros(7, np.float32), np.zeros(3, np.int64)
    o_src, o_dst = np.zeros(5, np.float32), np.ones(5, np.float32)
    seen = []

    def call():  # runs between the two sets of copies: sees the ins done, makes what the outs copy
        seen.append((a_dst.copy(), b_dst.copy(), o_dst.copy()))
        o_src[:] = a_dst[:5] * 2

    relay = fastpush.relay(((a_dst, a_src), (b_dst, b_src)), call, ((o_dst, o_src),))
    assert relay() is None
    np.testing.assert_array_equal(seen[0][0], a_src)
    np.testing.assert_array_equal(seen[0][1], b_src)
    np.testing.assert_array_equal(seen[0][2], np.ones(5, np.float32))  # the outs not yet copied
    np.testing.assert_array_equal(o_dst, a_src[:5] * 2)

    def boom():
        raise RuntimeError("from the runtime")

    with pytest.raises(RuntimeError, match="from the runtime"):  # the call's own exception, the outs left alone
        fastpush.relay((), boom, ((o_dst, np.zeros(5, np.float32)),))()
    np.testing.assert_array_equal(o_dst, a_src[:5] * 2)
    with pytest.raises(ValueError, match="differ in length"):
        ext.Relay(((a_dst, a_src[:6].copy()),), call, ())
    assert fastpush.relay(((a_dst[::2], a_src[::2]),), call, ()) is None  # strided: numpy copies those instead


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    from extras import export_models, need  # tests/extras.py

    need("executorch", "executorch")
    need("onnxruntime", "onnx")
    models = {
        "gru": edgeseq.build("rnn", d_in=6, d_out=4, d_hidden=16, cell="gru"),
        "lm": edgeseq.build("mamba", d_model=16, vocab_size=40, d_in=1, d_out=40, n_layers=1),
    }
    done = export_models(models, tmp_path_factory.mktemp("fastpush"), ("onnx", "executorch"), steps=50)
    return {key: art.path for key, (_, art) in done.items()}


def _stream(path, frames, strided: bool = False) -> np.ndarray:
    sess = edgeseq.open(path)
    assert sess.bound
    ys = []
    for x in frames:
        if strided:  # a view with a step: not a C-contiguous buffer, numpy's assignment copies it
            x = np.repeat(x, 2)[::2]
        ys.append(sess.push(x))
    return np.stack(ys)


@pytest.mark.parametrize("target", ["onnx", "executorch"])
@pytest.mark.parametrize("name", ["gru", "lm"])
def test_streams_bit_identical_to_the_numpy_step(arts, name, target, ext, monkeypatch):
    rng = np.random.default_rng(1)
    if name == "lm":
        frames = [int(t) for t in rng.integers(0, 40, size=T)]  # plain ints: numpy's assignment inside the C step
        also = [np.array([[t]], np.int64) for t in frames]  # arrays of one id: the C copy
    else:
        frames = list(rng.standard_normal((T, 6)).astype(np.float32))
        also = None
    fast = _stream(arts[name, target], frames)
    if also is None:
        fast_strided = _stream(arts[name, target], frames, strided=True)
    else:
        fast_strided = _stream(arts[name, target], also)
    _numpy_only(monkeypatch)
    assert fastpush.side_step(np.zeros(1, np.float32), lambda: None, np.zeros(1, np.float32)) is None
    slow = _stream(arts[name, target], frames)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast_strided.reshape(slow.shape), slow)  # (1, 1) ids come back as (1, d_out)
    assert np.abs(fast).max() > 0


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_refusals_at_the_same_steps_as_the_numpy_step(tmp_path, target, ext, monkeypatch):
    from extras import overflowing_rnn  # tests/extras.py

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = edgeseq.export(edgeseq.convert(overflowing_rnn(2.0)), tmp_path / "relu", target=target, steps=20).path
    seen = []
    for numpy_only in (False, True):
        if numpy_only:
            _numpy_only(monkeypatch)
        sess = edgeseq.open(path)
        x = np.ones(2, np.float32)
        for _ in range(5):
            sess.push(x)
        with pytest.raises(InputError, match=r"input at step 5 has NaN/Inf values"):
            sess.push(np.array([1.0, np.nan], np.float32))
        with pytest.raises(NumericalError, match=r"made state tensor 'h0' NaN/Inf from finite inputs") as e:
            for _ in range(400):
                good = sess.state
                sess.push(x)
        kept = sess.state
        assert kept.steps == good.steps == sess.steps > 20
        for a, b in zip(kept.tensors, good.tensors):
            np.testing.assert_array_equal(a, b)
        seen.append((sess.steps, e.value.args[0], [t.copy() for t in kept.tensors]))
    assert seen[0][:2] == seen[1][:2]
    for a, b in zip(seen[0][2], seen[1][2]):
        np.testing.assert_array_equal(a, b)


def test_built_from_an_empty_cache(tmp_path):
    """A fresh cache: the first load compiles the extension (with this machine's compiler) and loads it."""
    env = {**os.environ, "EDGESEQ_CACHE": str(tmp_path / "cache")}
    env.pop("EDGESEQ_PURE_PYTHON", None)
    code = "from edgeseq.runtimes import fastpush; print(fastpush.status())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("C extension: built (edgeseq_fastpush-"), done.stdout
    assert len(list((tmp_path / "cache" / "fastpush").glob("edgeseq_fastpush-*"))) == 1


def test_without_a_compiler_push_steps_through_numpy(tmp_path, arts):
    """A fresh cache and a compiler that does not exist: the extension is not built, status says why, and push
    gives what the C step gives."""
    code = (
        "import sys, numpy as np, edgeseq\n"
        "from edgeseq.runtimes import fastpush\n"
        "s = edgeseq.open(sys.argv[1])\n"
        "y = [s.push(np.full(6, 0.1 * i, np.float32)) for i in range(50)]\n"
        "print(fastpush.status())\n"
        "np.save(sys.argv[2], np.stack(y))\n"
    )
    env = {**os.environ, "EDGESEQ_CACHE": str(tmp_path / "cache"), "CC": str(tmp_path / "no-such-cc")}
    done = subprocess.run([sys.executable, "-c", code, str(arts["gru", "onnx"]), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("numpy (no C extension): not built"), done.stdout
    assert not list((tmp_path / "cache" / "fastpush").glob("*.so"))
    sess = edgeseq.open(arts["gru", "onnx"])
    want = np.stack([sess.push(np.full(6, 0.1 * i, np.float32)) for i in range(50)])
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)
