"""Runtime ``native`` (runtimes/inproc.py): an ExecuTorch program stepped from Python by the C runtime's ``es_push``.

Against two independent references: the same program on ExecuTorch's own Python bindings (runtime ``executorch``:
bit-identical outputs, the same kernels) and the eager step (within the export tolerance) over 2,000 steps; a
state crosses between the two runtimes both ways. The refusals are the session's: a NaN frame, a wrong shape or
dtype, a state of another model, two threads at once, and a step that overflows (named, its state not kept, at the
same step as the bindings' session refuses it)."""

import time
import warnings

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.errors import ArtifactError, InputError, NumericalError, ShapeError, StateMismatchError

T = 2000


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    from extras import export_models, need, need_tool  # tests/extras.py

    need("executorch", "executorch")
    need_tool("g++", "g++")
    torch.manual_seed(0)
    models = {
        "lstm": edgeseq.build("rnn", d_in=6, d_out=4, d_hidden=16, num_layers=2),
        "continual": edgeseq.build("continual", d_in=6, d_out=4, channels=(8, 8), kernel_size=3),
        "lm": edgeseq.build("mamba", d_model=16, vocab_size=40, d_in=1, d_out=40, n_layers=1),
    }
    done = export_models(models, tmp_path_factory.mktemp("inproc"))
    return {name: (step, art.path, art.manifest["parity"]["tolerance"]) for (name, _), (step, art) in done.items()}


def _frames(name: str, n: int = T, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "lm":
        return rng.integers(0, 40, size=(n, 1)).astype(np.int64)
    return rng.standard_normal((n, 6)).astype(np.float32)


def _eager(step, xs: np.ndarray) -> np.ndarray:
    """The eager step, frame by frame: the reference every export is held to."""
    state = step.init_state(1)
    ys = []
    with torch.no_grad():
        for x in torch.from_numpy(xs):
            y, state = step(x[None], state)
            ys.append(y[0].numpy())
    return np.stack(ys)


@pytest.mark.parametrize("name", ["lstm", "continual", "lm"])
def test_streams_as_the_bindings_and_the_eager_step(arts, name):
    step, path, tol = arts[name]
    xs = _frames(name)
    native = edgeseq.open(path, runtime="native")
    assert native.runtime == "native" and native.bound
    # how an app pushes: one frame (a plain int token id for the language model)
    got = np.stack([native.push(int(x[0]) if name == "lm" else x) for x in xs])
    np.testing.assert_array_equal(got, edgeseq.open(path, runtime="executorch").run(xs))  # the same kernels
    ref = _eager(step, xs)
    err = np.abs(got - ref).max() / max(1.0, np.abs(ref).max())
    assert err <= tol, err


@pytest.mark.parametrize("name", ["lstm", "lm"])
def test_run_steps_in_c_as_push_does_refusals_included(arts, name):
    """``run`` of a whole array is ``es_run`` in blocks (here of 300 steps): equal to the bindings' run, in each
    layout a frame array comes in; a bad frame at step 1234 stops it there with push's error and the state of
    step 1234 kept, as the bindings' session has it."""
    _, path, _ = arts[name]
    xs = _frames(name)
    ref = edgeseq.open(path, runtime="executorch").run(xs)
    sess = edgeseq.open(path, runtime="native")
    sess.RUN_BLOCK = 300
    np.testing.assert_array_equal(sess.run(xs), ref)
    assert sess.steps == T
    sess.reset()
    np.testing.assert_array_equal(sess.run(xs[:, None]), ref[:, None])  # (T, batch, d_in): (T, batch, d_out)
    bad = xs.copy()
    if name == "lm":
        bad[1234, 0] = 40
        err, match = InputError, r"token id 40 at step 1234 is outside the vocabulary"
    else:
        bad[1234, 3] = np.inf
        err, match = InputError, r"input at step 1234 has NaN/Inf values"
    sess.reset()
    with pytest.raises(err, match=match):
        sess.run(bad)
    assert sess.steps == 1234
    half = edgeseq.open(path, runtime="executorch")
    half.run(xs[:1234])
    for a, b in zip(sess.state.tensors, half.state.tensors):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sess.run(xs[1234:1300]), ref[1234:1300])  # and it streams on


@pytest.mark.parametrize("name", ["lstm", "continual"])
def test_a_state_crosses_between_runtimes_both_ways(arts, name):
    _, path, _ = arts[name]
    xs = _frames(name, 600)
    ref = edgeseq.open(path, runtime="executorch")
    ref_y = ref.run(xs)
    native = edgeseq.open(path, runtime="native")
    native.run(xs[:300])
    st = native.state
    assert st.steps == 300 and st.names == native.spec.names
    other = edgeseq.open(path, runtime="executorch")
    other.state = st  # native -> bindings
    np.testing.assert_array_equal(other.run(xs[300:]), ref_y[300:])
    back = edgeseq.open(path, runtime="native")
    half = edgeseq.open(path, runtime="executorch")
    half.run(xs[:450])
    back.state = half.state  # bindings -> native
    assert back.steps == 450
    np.testing.assert_array_equal(back.run(xs[450:]), ref_y[450:])
    back.reset()
    np.testing.assert_array_equal(back.run(xs[:10]), ref_y[:10])


def test_bad_inputs_are_the_sessions_refusals(arts):
    _, path, _ = arts["lstm"]
    sess = edgeseq.open(path, runtime="native")
    xs = _frames("lstm", 20)
    sess.run(xs[:5])
    bad = xs[5].copy()
    bad[2] = np.nan
    with pytest.raises(InputError, match=r"input at step 5 has NaN/Inf values"):
        sess.push(bad)
    with pytest.raises(ShapeError, match=r"expected shape \(1, 6\) or \(6,\), got \(7,\)"):
        sess.push(np.zeros(7, np.float32))
    with pytest.raises(ShapeError, match="expected dtype float32, got float64"):
        sess.push(np.zeros(6))
    assert sess.steps == 5
    y = sess.push(torch.from_numpy(xs[5]))  # torch in, torch out
    assert isinstance(y, torch.Tensor)
    ref = edgeseq.open(path, runtime="executorch").run(xs[:6])
    np.testing.assert_array_equal(y.numpy(), ref[5])  # the refused frames left the state as it was
    with pytest.raises(StateMismatchError, match="another model"):
        sess.state = edgeseq.open(arts["continual"][1], runtime="native").state


def test_an_onnx_artifact_is_refused_in_one_line(tmp_path):
    from extras import need  # tests/extras.py

    need("onnxruntime", "onnx")
    step = edgeseq.convert(edgeseq.build("rnn", d_in=2, d_out=2, d_hidden=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = edgeseq.export(step, tmp_path / "m", target="onnx", steps=20).path
    with pytest.raises(ArtifactError, match="runtime 'native' steps ExecuTorch programs"):
        edgeseq.open(path, runtime="native")


def test_two_threads_on_one_session_are_refused(arts):
    _, path, _ = arts["lstm"]
    sess = edgeseq.open(path, runtime="native")
    real = sess._es_push

    def slow(*args):  # 50 ms per step: the two pushes overlap for certain (ctypes lets go of the GIL)
        time.sleep(0.05)
        return real(*args)

    sess._es_push = slow
    from extras import two_pushes_at_once  # tests/extras.py

    caught = two_pushes_at_once(sess, np.zeros(6, np.float32))
    assert len(caught) == 1 and "a session is one stream" in str(caught[0])
    assert sess.steps == 1


def test_an_overflow_is_named_and_its_step_not_kept(tmp_path):
    """A ReLU RNN whose state doubles every step overflows float32 near step 128 from finite frames: the C runtime
    refuses the step (naming the state tensor) at the step the bindings' session refuses, and keeps the state from
    before it."""
    from extras import overflowing_rnn  # tests/extras.py

    model = overflowing_rnn(2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = edgeseq.export(edgeseq.convert(model), tmp_path / "relu", target="executorch", steps=20).path
    x = np.ones(2, np.float32)
    failed = {}
    for runtime in ("executorch", "native"):
        sess = edgeseq.open(path, runtime=runtime)
        with pytest.raises(NumericalError, match=r"step (\d+) made state tensor 'h0' NaN/Inf from finite inputs") as e:
            for _ in range(400):
                good = sess.state
                sess.push(x)
        failed[runtime] = (sess.steps, e.value.args[0])
        kept = sess.state
        assert kept.steps == good.steps == sess.steps
        for a, b in zip(kept.tensors, good.tensors):
            np.testing.assert_array_equal(a, b)
            assert np.isfinite(a).all()
    assert failed["native"][0] == failed["executorch"][0] > 20, failed
    sess = edgeseq.open(path, runtime="native")  # run (the C loop) refuses the same step
    with pytest.raises(NumericalError, match=rf"step {failed['native'][0]} made state tensor 'h0'"):
        sess.run(np.ones((400, 2), np.float32))
    assert sess.steps == failed["native"][0]
    assert f"step {failed['native'][0]} made state tensor 'h0'" in failed["native"][1]


def test_the_native_pool_refuses_as_the_pool_and_ignores_rows_without_frames(tmp_path):
    """A ReLU RNN that stays at zero on frames of ones and doubles on zero frames, in a 3-slot pool (its batch-4
    program) with one stream: the rows without a stream overflow after ~130 steps and that refuses nothing (as in
    the bindings' StreamPool, whose outputs it matches); the stream's own overflow, a NaN frame, a frame of the
    wrong size, a slot without a stream, a full pool and another model's state are refused with the pool's
    errors, and the stream's steps do not advance."""
    model = edgeseq.build("rnn", d_in=2, d_out=2, d_hidden=4, cell="rnn_relu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.eye(4) * 2.0 if "weight_hh" in name else torch.full_like(p, -10.0) if "weight_ih" in name
                    else torch.ones_like(p) if "bias" in name else p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = edgeseq.export(edgeseq.convert(model), tmp_path / "p", target="executorch", steps=20,
                              more_batches=(4,)).path
    pools = {r: edgeseq.StreamPool(path, slots=3, runtime=r) for r in ("executorch", "native")}
    ones, zeros = np.ones(2, np.float32), np.zeros(2, np.float32)
    for pool in pools.values():
        assert pool.join() == 0 and pool.rows == 4
    for _ in range(300):  # rows 1-3 run on zero frames: past float32 by step ~130
        ys = {r: p.step({0: ones})[0] for r, p in pools.items()}
        np.testing.assert_array_equal(ys["native"], ys["executorch"])
    native = pools["native"]
    assert native.steps(0) == 300 and native.active == [0]
    with pytest.raises(InputError, match=r"slot 0's frame at its step 300 has NaN/Inf values"):
        native.step({0: np.array([np.nan, 1.0], np.float32)})
    with pytest.raises(ShapeError, match="slot 0's frame has 3 values; the model takes 2"):
        native.step({0: np.ones(3, np.float32)})
    with pytest.raises(ShapeError, match=r"slot 1 has no stream \(active: \[0\]\)"):
        native.step({1: ones})
    other = edgeseq.open(tmp_path / "p.pte", runtime="native").state
    other.fingerprint = "0" * 64
    with pytest.raises(StateMismatchError, match="another model"):
        native.join(other)
    assert native.join() == 1 and native.join() == 2
    with pytest.raises(ShapeError, match="all 3 slots are taken"):
        native.join()
    for s in (1, 2):
        native.leave(s)
    assert native.steps(0) == 300
    failed = {}
    for r, pool in pools.items():  # the stream's own row on zero frames: refused at the same step by both pools
        with pytest.raises(InputError, match=r"state tensor 'h0' became NaN/Inf in one of slots \[0\]") as e:
            for _ in range(400):
                pool.step({0: zeros})
        failed[r] = pool.steps(0)
        assert "their states are kept" in str(e.value)
    assert failed["native"] == failed["executorch"] > 300, failed
    st = native.leave(0)  # the state before the refused step: finite
    assert st.steps == failed["native"] and all(np.isfinite(t).all() for t in st.tensors)
