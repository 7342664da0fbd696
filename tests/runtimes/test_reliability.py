"""Sessions and threads, and numerical guards: separate sessions in threads stay exact; one session pushed from two
threads at once is refused; a state that overflows is reported by step and tensor, and the last good state kept."""

import threading
import time
import warnings

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.errors import ConcurrentUseError, NumericalError


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
    sess.backend = _Slow(sess.backend)
    x = np.zeros((1, 6), np.float32)
    caught: list = []

    def push():
        try:
            sess.push(x)
        except ConcurrentUseError as exc:
            caught.append(exc)

    a, b = threading.Thread(target=push), threading.Thread(target=push)
    a.start()
    time.sleep(0.01)
    b.start()
    a.join()
    b.join()
    assert len(caught) == 1 and "a session is one stream" in str(caught[0])
    assert sess.steps == 1  # only the first thread's frame went in
    sess.push(x)  # the session is usable again once the other push is done
    assert sess.steps == 2


def test_a_state_that_overflows_is_reported_and_the_last_good_state_kept():
    """A ReLU RNN with large recurrent weights grows without bound: float32 overflows to Inf within ~30 steps from
    finite inputs. The guard names the step and the state tensor; the state stays the one before that step."""
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=2, d_out=2, d_hidden=4, cell="rnn_relu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "weight_hh" in name:
                p.copy_(torch.eye(4) * 30.0)
            elif "bias" in name:
                p.fill_(1.0)
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
