"""Sessions and threads, and numerical guards: separate sessions in threads stay exact; one session pushed from two
threads at once is refused; a state that overflows is reported by step and tensor, and the last good state kept."""

import threading
import time
import warnings

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.errors import NumericalError


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    from extras import need  # tests/extras.py

    need("onnxruntime", "onnx")
    need("executorch", "executorch")
    torch.manual_seed(0)
    step = edgeseq.convert(edgeseq.build("rnn", d_in=6, d_out=4, d_hidden=16))
    d = tmp_path_factory.mktemp("threads")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {t: edgeseq.export(step, d / "m", target=t, steps=100).path for t in ("onnx", "executorch")}


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_eight_sessions_in_eight_threads_equal_sequential_runs(artifacts, target):
    T, N = 5000, 8
    xs = [np.random.default_rng(i).standard_normal((T, 6)).astype(np.float32) for i in range(N)]
    ref = [edgeseq.open(artifacts[target]).run(x) for x in xs]
    got: list = [None] * N
    errors: list = []

    def work(i):
        try:
            got[i] = edgeseq.open(artifacts[target]).run(xs[i])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(N):
        np.testing.assert_array_equal(got[i], ref[i])  # bit-identical: nothing shared between sessions


class _Slow:
    """A backend that takes 50 ms per step: two threads pushing one session overlap for certain."""

    def __init__(self, inner):
        self.inner = inner

    def run(self, x, state):
        time.sleep(0.05)
        return self.inner.run(x, state)


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_one_session_pushed_from_two_threads_at_once_is_refused(artifacts, target):
    sess = edgeseq.open(artifacts[target])
    from extras import two_pushes_at_once  # tests/extras.py

    sess.backend = _Slow(sess.backend)
    x = np.zeros((1, 6), np.float32)
    caught = two_pushes_at_once(sess, x)
    assert len(caught) == 1 and "a session is one stream" in str(caught[0])
    assert sess.steps == 1  # only the first thread's frame went in
    sess.push(x)  # the session is usable again once the other push is done
    assert sess.steps == 2


def test_a_state_that_overflows_is_reported_and_the_last_good_state_kept():
    """A ReLU RNN with large recurrent weights grows without bound: float32 overflows to Inf within ~30 steps from
    finite inputs. The guard names the step and the state tensor; the state stays the one before that step."""
    from extras import overflowing_rnn  # tests/extras.py

    model = overflowing_rnn(30.0)
    sess = edgeseq.open(model)
    x = np.ones((1, 2), np.float32)
    with pytest.raises(NumericalError, match=r"step (\d+) made state tensor 'h0' NaN/Inf from finite inputs") as info:
        for _ in range(100):
            good = sess.state
            sess.push(x)
    step = int(info.value.args[0].split("step ")[1].split(" ")[0])
    assert sess.steps == step and good.steps == step  # the failing step did not count
    kept = sess.state
    for a, b in zip(kept.tensors, good.tensors):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()


@pytest.mark.parametrize("target", ["onnx", "executorch", "native"])
def test_pool_slots_equal_each_stream_run_alone_with_joins_and_leaves(artifacts, target, tmp_path):
    """2,000 steps of a 4-slot pool: streams join and leave, some steps skip some streams (their state waits);
    every stream's outputs equal the same frames pushed through a batch-1 session alone, and a stream that left and
    joined again (its saved state) continues as if it had never left."""
    from extras import need  # tests/extras.py

    path, slots = artifacts.get(target), 4
    if target in ("executorch", "native"):  # a program's batch is fixed at export: programs for 1 and 4 streams, in one
        # manifest (native: the same programs, the pool the C runtime's es_pool_*)
        need("executorch", "executorch")
        torch.manual_seed(0)
        step = edgeseq.convert(edgeseq.build("rnn", d_in=6, d_out=4, d_hidden=16))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = edgeseq.export(step, tmp_path / "pool", target="executorch", steps=100, more_batches=(4,)).path
        slots = 3  # the batch-4 program serves them (its fourth row idles)
    rng = np.random.default_rng(0)
    pool = edgeseq.StreamPool(path, slots=slots, runtime="native" if target == "native" else None)
    assert (pool.slots, pool.rows) == (slots, 4)
    assert type(pool).__name__ == ("NativePool" if target == "native" else "StreamPool")
    streams: dict[str, dict] = {}  # name -> {"slot", "frames", "outs"}
    parked: dict[str, edgeseq.StreamState] = {}
    names = iter(f"s{i}" for i in range(100))
    for t in range(2000):
        if len(pool.active) < slots and rng.random() < 0.05:  # a new stream, or a parked one comes back
            if parked and rng.random() < 0.5:
                name = next(iter(parked))
                streams[name]["slot"] = pool.join(parked.pop(name))
            else:
                name = next(names)
                streams[name] = {"slot": pool.join(), "frames": [], "outs": []}
        live = [n for n, s in streams.items() if s["slot"] is not None]
        if live and rng.random() < 0.02:  # one leaves: parked with its state, or gone
            name = live[int(rng.integers(len(live)))]
            st = pool.leave(streams[name]["slot"])
            streams[name]["slot"] = None
            if rng.random() < 0.5:
                parked[name] = st
        frames = {}
        for n, s in streams.items():
            if s["slot"] is not None and rng.random() < 0.8:  # some streams have no frame this step
                f = rng.standard_normal(6).astype(np.float32)
                frames[s["slot"]] = f
                s["frames"].append(f)
        ys = pool.step(frames)
        for n, s in streams.items():
            if s["slot"] in frames and s["slot"] is not None:
                s["outs"].append(ys[s["slot"]])
    assert len(streams) >= 5 and sum(len(s["frames"]) for s in streams.values()) > 3000
    for n, s in streams.items():
        if not s["frames"]:
            continue
        alone = edgeseq.open(path).run(np.stack(s["frames"]))  # batch 1
        np.testing.assert_allclose(np.stack(s["outs"]), alone, atol=1e-6, err_msg=n)


def test_executorch_programs_for_several_batch_sizes_in_one_manifest(tmp_path):
    """``export(..., more_batches=(3, 8))`` writes one program per batch, each with its own manifest and validated;
    the first manifest lists them; ``open(path, batch=8)`` runs the batch-8 program, equal row by row to eight
    batch-1 streams over 1,000 steps; a batch without a program, a tampered program and a pool too big for every
    program are refused, naming what there is."""
    import json

    from extras import need  # tests/extras.py

    from edgeseq.errors import ArtifactError

    need("executorch", "executorch")
    torch.manual_seed(0)
    step = edgeseq.convert(edgeseq.build("rnn", d_in=6, d_out=4, d_hidden=16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target="executorch", steps=200, more_batches=(8, 3, 1))
    progs = art.manifest["batch_programs"]
    assert [(e["batch"], e["file"]) for e in progs] == [(3, "m.b3.pte"), (8, "m.b8.pte")]
    for e in progs:
        own = json.loads((tmp_path / f"{e['file']}.edgeseq.json").read_text())
        assert own["batch"] == e["batch"] and own["parity"]["steps"] == 200 and own["parity"]["batch"] == e["batch"]
        assert own["parity"]["max_scaled_error"] <= 1e-4 and own["fingerprint"] == art.manifest["fingerprint"]
    xs = np.random.default_rng(0).standard_normal((1000, 8, 6)).astype(np.float32)
    s8 = edgeseq.open(art.path, batch=8)
    assert s8.batch == 8 and s8.path.name == "m.b8.pte"
    got = s8.run(xs)
    for r in range(8):
        np.testing.assert_allclose(got[:, r], edgeseq.open(art.path).run(xs[:, r]), atol=1e-6)
    with pytest.raises(ArtifactError, match=r"exported for batch 1, 3, 8; got batch 5 \(re-export with --batch 1,3,5,8\)"):
        edgeseq.open(art.path, batch=5)
    with pytest.raises(ArtifactError, match=r"a pool of 9 streams needs a program of batch >= 9; .* has batch 1, 3, 8"):
        edgeseq.StreamPool(art.path, slots=9)
    b3 = tmp_path / "m.b3.pte"
    data = bytearray(b3.read_bytes())
    data[-1] ^= 0xFF
    b3.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"m\.b3\.pte: file does not match its manifest \(sha256 differs\)"):
        edgeseq.open(art.path, batch=3)
    (tmp_path / "m.b8.pte").unlink()
    with pytest.raises(ArtifactError, match=r"the batch-8 program listed in m\.pte's manifest is missing"):
        edgeseq.StreamPool(art.path, slots=8)


def test_export_cli_writes_a_program_per_batch(tmp_path):
    from extras import need  # tests/extras.py
    from typer.testing import CliRunner

    from edgeseq.cli.main import app

    need("executorch", "executorch")
    torch.manual_seed(0)
    edgeseq.save(edgeseq.build("rnn", d_in=6, d_out=4, d_hidden=8), tmp_path / "m")
    r = CliRunner().invoke(app, ["export", str(tmp_path / "m"), "--target", "executorch", "--batch", "1,4",
                                 "--steps", "100", "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert "m.b4.pte" not in r.output and "e.b4.pte (batch 4)" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["inspect", str(tmp_path / "e.pte")])
    assert r.exit_code == 0 and "batch 4: e.b4.pte" in r.output, r.output
    assert edgeseq.StreamPool(tmp_path / "e.pte", slots=2).rows == 4


_WRITER = r"""
import sys, warnings
warnings.simplefilter("ignore")
import numpy as np, edgeseq
sess = edgeseq.open(sys.argv[1])
xs = np.random.default_rng(0).standard_normal((100000, 6)).astype(np.float32)
for t in range(len(xs)):
    sess.push(xs[t])
    if (t + 1) % 10 == 0:
        sess.state.save(sys.argv[2])  # written beside, then renamed over the previous one
        if t == 49:
            print("saving", flush=True)
"""


def test_kill_9_during_state_writes_leaves_the_previous_state_readable(artifacts, tmp_path):
    """A process that saves its state every 10 steps is killed with SIGKILL at a random moment, many times over; the
    file on disk is always a whole state (the last one renamed into place), and the stream resumed from it continues
    exactly as a session that never stopped."""
    import signal
    import subprocess
    import sys

    xs = np.random.default_rng(0).standard_normal((100000, 6)).astype(np.float32)
    state_file = tmp_path / "state.npz"
    rng = np.random.default_rng(1)
    for trial in range(3):
        p = subprocess.Popen([sys.executable, "-c", _WRITER, str(artifacts["onnx"]), str(state_file)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "saving"
        time.sleep(float(rng.uniform(0.05, 0.5)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL
        st = edgeseq.StreamState.load(state_file)  # never half-written
        n = st.steps
        assert n % 10 == 0 and n >= 50
        # a kill in the middle of a write can leave its hidden staging folder behind (nothing runs after SIGKILL to
        # remove it), never a partial state.npz
        assert all(f.name == "state.npz" or f.name.startswith(".edgeseq-tmp-") for f in tmp_path.iterdir())
        resumed = edgeseq.open(artifacts["onnx"])
        resumed.state = st
        whole = edgeseq.open(artifacts["onnx"])
        whole.run(xs[:n])
        np.testing.assert_array_equal(resumed.run(xs[n:n + 200]), whole.run(xs[n:n + 200]))


@pytest.mark.parametrize("target", ["onnx"])
def test_a_pool_refuses_a_bad_frame_naming_its_slot_and_keeps_every_state(artifacts, target):
    """A pool step bound to its session's arena: a NaN frame is refused naming its slot, a frame of the wrong size
    naming the sizes, and neither changes any stream (the next steps equal the streams run alone, without the
    refused steps)."""
    from edgeseq.errors import InputError, ShapeError

    pool = edgeseq.StreamPool(artifacts[target], slots=2)
    assert pool._sess.bound
    a, b = pool.join(), pool.join()
    rng = np.random.default_rng(0)
    d = pool.d_in
    xs = rng.standard_normal((20, 2, d)).astype(np.float32)
    outs = {a: [], b: []}
    for t in range(20):
        if t == 5:
            bad = xs[t, 1].copy()
            bad[3] = np.nan
            with pytest.raises(InputError, match=rf"slot {b}'s frame at its step {pool.steps(b)} has NaN/Inf"):
                pool.step({a: xs[t, 0], b: bad})
            with pytest.raises(ShapeError, match=rf"slot {a}'s frame has {d - 1} values; the model takes {d}"):
                pool.step({a: xs[t, 0, 1:]})
        got = pool.step({a: xs[t, 0], b: xs[t, 1]} if t % 3 else {a: xs[t, 0]})
        for s in got:
            outs[s].append(got[s])
    alone_a = edgeseq.open(artifacts[target]).run(xs[:, 0])
    alone_b = edgeseq.open(artifacts[target]).run(np.stack([xs[t, 1] for t in range(20) if t % 3]))
    np.testing.assert_allclose(np.stack(outs[a]), alone_a, atol=1e-6)
    np.testing.assert_allclose(np.stack(outs[b]), alone_b, atol=1e-6)
    assert pool.steps(a) == 20 and pool.steps(b) == len(alone_b)
