"""Tests whose reference is an upstream library (transformers, mambapy, continual-inference) or that need another
optional extra: ``need(module, extra)`` imports it, or, when it is missing, skips saying which extra to install;
with ``EDGESEQ_REQUIRE_ORACLES=1`` (set by ``.ci/run``) a missing extra is a failure instead, so a run cannot end
green without the project's strongest checks. (tests/ is on ``sys.path``: pytest puts the rootdir conftest's
folder there.)"""

from __future__ import annotations

import importlib
import os

import pytest

REQUIRE = "EDGESEQ_REQUIRE_ORACLES"


def required() -> bool:
    return os.environ.get(REQUIRE) == "1"


def need(module: str, extra: str, why: str = ""):
    """The imported ``module``; else a skip (a failure under EDGESEQ_REQUIRE_ORACLES=1) naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = (f"{module} is not importable ({exc}): install the [{extra}] extra "
               f"(pip install -e '.[{extra}]'){': ' + why if why else ''}")
        if required():
            pytest.fail(f"{msg}; {REQUIRE}=1 makes a missing extra a failure", pytrace=False)
        pytest.skip(msg, allow_module_level=True)


def need_tool(command: str, apt_package: str, why: str = ""):
    """The path of the system tool ``command``; else a skip (a failure under EDGESEQ_REQUIRE_ORACLES=1, as .ci/run
    installs it with apt-get) naming the Debian package."""
    import shutil

    path = shutil.which(command)
    if path:
        return path
    msg = f"{command} is not installed: apt-get install {apt_package}{': ' + why if why else ''}"
    if required():
        pytest.fail(f"{msg}; {REQUIRE}=1 makes a missing tool a failure", pytrace=False)
    pytest.skip(msg)


def two_pushes_at_once(sess, x) -> list:
    """``sess.push(x)`` from two threads, the second started 10 ms after the first (make the step slow enough that
    they overlap); the ConcurrentUseErrors they raised."""
    import threading
    import time

    from edgeseq.errors import ConcurrentUseError

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
    return caught


def overflowing_rnn(gain: float):
    """A 2-in, 4-unit ReLU RNN whose recurrent weights are ``gain`` x identity and biases 1: from frames of ones its
    state grows by about ``gain`` every step until float32 overflows to Inf (a finite model, finite inputs)."""
    import torch

    import edgeseq

    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=2, d_out=2, d_hidden=4, cell="rnn_relu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "weight_hh" in name:
                p.copy_(torch.eye(4) * gain)
            elif "bias" in name:
                p.fill_(1.0)
    return model


def export_models(models: dict, out, targets=("executorch",), steps: int = 100) -> dict:
    """Each model converted and exported to each target under ``out`` (warnings quiet): ``{(name, target): (step,
    artifact)}``."""
    import warnings

    import edgeseq

    done = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, model in models.items():
            step = edgeseq.convert(model)
            for target in targets:
                done[name, target] = (step, edgeseq.export(step, out / f"{name}_{target}", target=target, steps=steps))
    return done
