"""The native (C++) runner: built for x86_64 and aarch64 from the executorch wheels; on x86 it streams every
family's and every ExecuTorch scheme's artifact exactly as the Python session does (a state saved by one resumes
in the other); under qemu-aarch64 (cortex-a76, max) the same programs on ARM's kernels stay within each artifact's
tolerance of the x86 run. Bad inputs: one line, exit 1, nothing written."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.data import load_dataset
from edgeseq.pipeline import real_stream

T = 1000


@pytest.fixture(scope="module")
def x86():
    from extras import need, need_tool  # tests/extras.py

    need("executorch", "executorch")
    need_tool("g++", "g++")
    from edgeseq.runtimes import native

    return native.build("x86_64")


@pytest.fixture(scope="module")
def arm():
    from extras import need, need_tool  # tests/extras.py

    need("executorch", "executorch")
    need_tool("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", "the aarch64 cross compiler")
    need_tool("qemu-aarch64", "qemu-user", "runs the aarch64 runner here")
    from edgeseq.runtimes import native

    return native.build("aarch64")


def _models():
    torch.manual_seed(0)
    return {
        "rnn": edgeseq.build("rnn", d_in=12, d_out=9, d_hidden=16, num_layers=2),
        "aaren": edgeseq.build("aaren", d_in=12, d_out=9, d_model=16, n_layers=1),
        "mamba": edgeseq.build("mamba", d_in=12, d_out=9, d_model=16, n_layers=1),
        "continual": edgeseq.build("continual", d_in=12, d_out=9, channels=(8, 8), kernel_size=3),
    }


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Every family at fp32, and the LSTM at every ExecuTorch scheme (fp16, int8-dynamic, int8-static)."""
    import warnings

    from extras import need  # tests/extras.py

    need("executorch", "executorch")
    from edgeseq.quant import Fp16Config, Int8DynamicConfig, Int8StaticConfig, quantize_

    d = tmp_path_factory.mktemp("native")
    arts = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, model in _models().items():
            arts[name] = edgeseq.export(edgeseq.convert(model), d / name, target="executorch", steps=300)
        rnn = _models()["rnn"]
        for scheme, cfg in (("fp16", Fp16Config()), ("int8-dynamic", Int8DynamicConfig()),
                            ("int8-static", Int8StaticConfig())):
            step = quantize_(edgeseq.convert(rnn), cfg, calib="japanese-vowels", target="executorch")
            arts[f"rnn-{scheme}"] = edgeseq.export(step, d / f"rnn-{scheme}", target="executorch", steps=300)
    return {k: a.path for k, a in arts.items()}


@pytest.fixture(scope="module")
def frames():
    return real_stream(load_dataset("japanese-vowels").test, T)


NAMES = ["rnn", "aaren", "mamba", "continual", "rnn-fp16", "rnn-int8-dynamic", "rnn-int8-static"]


@pytest.mark.parametrize("name", NAMES)
def test_x86_runner_streams_like_the_python_session(x86, artifacts, frames, name):
    from edgeseq.runtimes import native

    got = native.run(x86, artifacts[name], frames)
    ref = edgeseq.open(artifacts[name]).run(frames)
    assert got.shape == ref.shape == (T, 9)
    assert np.abs(got - ref).max() <= 1e-6, np.abs(got - ref).max()  # the same kernels: equal in practice
    # the program writes the next state into the runner's other buffers (no copy per step)
    assert native.info(x86, artifacts[name])["state"] == "swapped"


@pytest.mark.parametrize("name", ["rnn", "continual"])
def test_a_state_saved_in_one_resumes_in_the_other(x86, artifacts, frames, name, tmp_path):
    from edgeseq.runtimes import native
    from edgeseq.runtimes.session import StreamState

    whole = edgeseq.open(artifacts[name]).run(frames)
    half = T // 2
    # C++ first half, state saved; Python second half from it
    native.run(x86, artifacts[name], frames[:half], state_out=tmp_path / "c.esstate")
    sess = edgeseq.open(artifacts[name])
    sess.state = StreamState.load(tmp_path / "c.esstate")
    assert sess.steps == half
    np.testing.assert_allclose(sess.run(frames[half:]), whole[half:], atol=1e-6)
    # Python first half, state saved as .esstate; C++ second half from it
    sess = edgeseq.open(artifacts[name])
    sess.run(frames[:half])
    sess.state.save(tmp_path / "p.esstate")
    got = native.run(x86, artifacts[name], frames[half:], state_in=tmp_path / "p.esstate")
    np.testing.assert_allclose(got, whole[half:], atol=1e-6)


@pytest.mark.parametrize("cpu", ["cortex-a76", "max"])
def test_every_artifact_passes_its_tolerance_on_arm_arithmetic(arm, artifacts, frames, cpu):
    """The aarch64 runner under qemu: ARM's NEON / dot-product / fp16 kernels against the x86 run of the same
    program, within each artifact's own export tolerance (docs/compression.md lists the figures)."""
    from edgeseq.runtimes import native

    worst = {}
    for name in NAMES:
        got = native.run(arm, artifacts[name], frames, cpu)
        ref = edgeseq.open(artifacts[name]).run(frames)
        tol = json.loads(open(f"{artifacts[name]}.edgeseq.json").read())["parity"]["tolerance"]
        scaled = float((np.abs(got - ref).max(axis=1) / np.maximum(np.abs(ref).max(axis=1), 1.0)).max())
        worst[name] = scaled
        assert scaled <= tol, (name, cpu, scaled, tol)
    print(cpu, {k: f"{v:.2e}" for k, v in worst.items()})


def test_check_device_records_parity_in_the_manifest(arm, artifacts, tmp_path):
    from typer.testing import CliRunner

    from edgeseq.cli.main import app

    art = tmp_path / "rnn.pte"
    shutil.copy(artifacts["rnn"], art)
    shutil.copy(f"{artifacts['rnn']}.edgeseq.json", f"{art}.edgeseq.json")
    man = json.loads(open(f"{art}.edgeseq.json").read())
    man["file"] = "rnn.pte"
    open(f"{art}.edgeseq.json", "w").write(json.dumps(man))
    r = CliRunner().invoke(app, ["check-device", str(art), "--device", "raspberry-pi-5", "--frames", "1000"])
    assert r.exit_code == 0, r.output
    rec = json.loads(open(f"{art}.edgeseq.json").read())["parity_on"]
    assert [p["device"] for p in rec] == ["raspberry-pi-5"] and rec[0]["qemu_cpu"] == "cortex-a76"
    assert rec[0]["frames"] == 1000 and rec[0]["passed"] and rec[0]["max_scaled_error"] <= rec[0]["tolerance"]
    # vs the eager step: ARM-vs-x86 plus the export's own x86-vs-eager error (the triangle inequality)
    assert rec[0]["vs_eager_bound"] == pytest.approx(rec[0]["max_scaled_error"] + man["parity"]["max_scaled_error"])
    r = CliRunner().invoke(app, ["inspect", str(art)])
    assert "raspberry-pi-5" in r.output and "cortex-a76" in r.output
    r = CliRunner().invoke(app, ["check-device", str(art), "--device", "host"])
    assert r.exit_code == 1 and "has no qemu_cpu" in r.output
    # from edgeseq profile: beside each estimate of an aarch64 device
    r = CliRunner().invoke(app, ["profile", str(art), "--steps", "200", "--op-steps", "0", "--streams", "1", "--device",
                                 "jetson-nano", "--arm-parity", "--out", str(tmp_path / "prof")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "prof" / "report.json").read_text())
    arm = [e["arm_parity"] for e in report["estimates"] if e.get("arm_parity")]
    assert len(arm) == 1 and arm[0]["qemu_cpu"] == "cortex-a57" and arm[0]["passed"]
    assert "Parity on each device's arithmetic" in (tmp_path / "prof" / "report.md").read_text()


def test_channels_last_and_passed_through_state(x86, tmp_path):
    """A 3D clip model's step: ring buffers of (C, H, W) frames the program takes channels-last, shifted by the
    runner (passthrough), not by the program; streamed and resumed from a saved state as the Python session does."""
    import warnings

    from torch import nn

    from edgeseq.models.continual import OfflineModel
    from edgeseq.runtimes import native
    from edgeseq.runtimes.session import StreamState

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 4, (3, 3, 3), padding=(0, 1, 1)), nn.ReLU(), nn.Conv3d(4, 4, (2, 3, 3), padding=(0, 1, 1)),
                        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(edgeseq.convert(OfflineModel(net.eval(), (2, 6, 6), window=6)), tmp_path / "clip",
                             target="executorch", steps=100)
    rt = art.manifest["runtime"]
    assert rt["channels_last_state"] and rt["passthrough_state"] and rt["planned_outputs"] is False, rt
    assert native.info(x86, art.path)["state"] == "swapped"
    x = np.random.default_rng(0).standard_normal((300, 72)).astype(np.float32)
    whole = edgeseq.open(art.path).run(x)
    np.testing.assert_allclose(native.run(x86, art.path, x), whole, atol=1e-6)
    native.run(x86, art.path, x[:150], state_out=tmp_path / "c.esstate")
    sess = edgeseq.open(art.path)
    sess.state = StreamState.load(tmp_path / "c.esstate")
    np.testing.assert_allclose(sess.run(x[150:]), whole[150:], atol=1e-6)


def test_a_program_with_planned_outputs_copies_its_state(x86, tmp_path):
    """A step whose next state is its input frame keeps inputs and outputs memory-planned (see the ExecuTorch
    exporter): the runner copies the state out of the program's memory each step instead of swapping buffers, and
    streams as the Python session does."""
    import warnings

    from edgeseq.runtimes import native
    from edgeseq.step import StateSpec, StateTensor, StepInfo, StepModule

    class PreviousFrame(StepModule):  # y = W (x - previous x)
        def __init__(self):
            super().__init__()
            self.d_in, self.d_out = 6, 3
            self.state_spec = StateSpec((StateTensor("prev", (6,)),))
            self.info = StepInfo("custom")
            self.lin = torch.nn.Linear(6, 3)

        def _step(self, x, state):
            return self.lin(x - state[0]), (x,)

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(PreviousFrame().eval(), tmp_path / "prev", target="executorch", steps=200)
    assert art.manifest["runtime"]["planned_outputs"] is True
    assert native.info(x86, art.path)["state"] == "copied"
    x = np.random.default_rng(1).standard_normal((2000, 6)).astype(np.float32)
    np.testing.assert_allclose(native.run(x86, art.path, x), edgeseq.open(art.path).run(x), atol=1e-6)


def test_a_batch_program_of_a_multi_batch_export(x86, frames, tmp_path):
    """An artifact exported for batches 1 and 3: the batch-3 program has its own manifest, and the runner streams
    three rows at once as the Python session opened with batch=3 does."""
    import warnings

    from edgeseq.runtimes import native

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(edgeseq.convert(_models()["rnn"]), tmp_path / "m", target="executorch", steps=100,
                             more_batches=(3,))
    b3 = tmp_path / art.manifest["batch_programs"][0]["file"]
    assert native.info(x86, b3)["batch"] == "3"
    x = np.stack([frames, frames[::-1], frames * 0.5], axis=1)  # (T, 3, 12): three different streams
    got = native.run(x86, b3, x)
    np.testing.assert_allclose(got, edgeseq.open(art.path, batch=3).run(x), atol=1e-6)
    np.testing.assert_allclose(got[:, 1], edgeseq.open(art.path).run(frames[::-1]), atol=1e-6)


def test_token_ids_of_a_language_model(x86, tmp_path):
    import warnings

    from edgeseq.runtimes import native

    torch.manual_seed(0)
    lm = edgeseq.build("mamba", d_model=16, vocab_size=40, d_in=1, d_out=40, n_layers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(edgeseq.convert(lm), tmp_path / "lm", target="executorch", steps=100)
    ids = np.random.default_rng(0).integers(0, 40, size=(200, 1)).astype(np.int64)
    np.testing.assert_allclose(native.run(x86, art.path, ids), edgeseq.open(art.path).run(ids), atol=1e-6)
    bad = ids.copy()
    bad[7, 0] = 40
    with pytest.raises(Exception, match=r"step 7: token id 40 outside 0..39"):
        native.run(x86, art.path, bad)


def _runner(b, *args):
    return subprocess.run([str(b.runner), *map(str, args)], capture_output=True, text=True, env=b.env())


def test_runner_bad_inputs_one_line_nothing_written(x86, artifacts, tmp_path):
    rnn = artifacts["rnn"]
    np.save(tmp_path / "ok.npy", np.zeros((5, 12), np.float32))
    np.save(tmp_path / "wide.npy", np.zeros((5, 7), np.float32))
    bad = np.zeros((5, 12), np.float32)
    bad[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    shutil.copy(rnn, tmp_path / "alone.pte")  # no manifest beside it
    shutil.copy(rnn, tmp_path / "other.pte")
    man = json.loads(open(f"{artifacts['aaren']}.edgeseq.json").read())  # another model's manifest
    man["file"] = "other.pte"
    (tmp_path / "other.pte.edgeseq.json").write_text(json.dumps(man))
    (tmp_path / "junk.pte").write_bytes(os.urandom(100))
    from edgeseq.runtimes import native

    native.run(x86, artifacts["aaren"], np.zeros((3, 12), np.float32), state_out=tmp_path / "aaren.esstate")
    out = tmp_path / "y.npy"
    cases = [
        ([tmp_path / "alone.pte", "-i", tmp_path / "ok.npy", "-o", out], "no manifest beside it"),
        ([tmp_path / "other.pte", "-i", tmp_path / "ok.npy", "-o", out], "sha256 differs"),
        ([tmp_path / "junk.pte", "-i", tmp_path / "ok.npy", "-o", out], "not an ExecuTorch program"),
        ([rnn, "-i", tmp_path / "wide.npy", "-o", out], "7 values per step; the model takes 12"),
        ([rnn, "-i", tmp_path / "nan.npy", "-o", out], "step 3 has NaN at feature 2"),
        ([rnn, "-i", tmp_path / "ok.npy", "-o", out, "--state-in", tmp_path / "aaren.esstate"], "comes from another model"),
        ([rnn, "-i", tmp_path / "ok.npy", "-o", tmp_path / "y.txt"], "must end in .npy"),
        ([rnn, "--bogus"], "unknown or incomplete option --bogus"),
        ([rnn, "--pool"], "--pool goes with --bench N"),
        ([rnn, "--bench", "0", "--pool"], "es_pool_benchmark: bad argument"),
    ]
    for args, msg in cases:
        r = _runner(x86, *args)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert r.returncode == 1 and len(errors) == 1 and msg in errors[0], (args, r.stderr)
        assert not out.exists() and not (tmp_path / "y.txt").exists()


def test_missing_cross_toolchain_is_one_line(monkeypatch, tmp_path):
    from edgeseq.errors import MissingDependencyError
    from edgeseq.runtimes import native

    monkeypatch.setenv("PATH", str(tmp_path))  # no compilers on it
    with pytest.raises(MissingDependencyError, match=r"aarch64-linux-gnu-g\+\+ is not installed; install it with: apt-get install g\+\+-aarch64-linux-gnu"):
        native.build("aarch64", tmp_path / "out")


def test_c_example_runs(x86, artifacts):
    r = subprocess.run([str(x86.example), str(artifacts["rnn"])], capture_output=True, text=True, env=x86.env())
    assert r.returncode == 0 and r.stdout.startswith("100 ready outputs of 100"), r.stdout + r.stderr


def _pool_child(x86, pte, slots, script, frames, tmp_path):
    import sys

    (tmp_path / "script.json").write_text(json.dumps(script))
    np.save(tmp_path / "frames.npy", frames)
    child = os.path.join(os.path.dirname(__file__), "native_pool_child.py")
    r = subprocess.run([sys.executable, child, str(x86.library), str(pte), str(slots), str(tmp_path / "script.json"),
                        str(tmp_path / "frames.npy"), str(tmp_path / "out.npz")], capture_output=True, text=True,
                       env=x86.env())
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(np.load(tmp_path / "out.npz"))


@pytest.mark.parametrize("family", ["rnn", "continual"])
def test_c_pool_streams_join_and_leave_each_as_if_alone(x86, frames, family, tmp_path):
    """The C pool (es_pool_*): 3 slots on the batch-4 program of a multi-batch export; streams join, wait, leave
    with their state and come back; each stream's outputs and ready flags equal the same stream pushed alone through a
    batch-1 Python session, a state a stream left with resumes there, and refused calls (a full pool, a NaN frame, a
    slot twice or without a stream, a state of another model) return their codes with every state kept."""
    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(edgeseq.convert(_models()[family]), tmp_path / "m", target="executorch", steps=100,
                             more_batches=(4,))
        other = edgeseq.export(edgeseq.convert(edgeseq.build("rnn", d_in=12, d_out=9, d_hidden=8)), tmp_path / "o",
                               target="executorch", steps=50)
    b4 = tmp_path / art.manifest["batch_programs"][0]["file"]
    foreign = tmp_path / "foreign.esstate"
    edgeseq.open(other.path).state.save(foreign)
    R = 90
    F = np.stack([frames[:R], frames[R:2 * R][::-1], frames[2 * R:3 * R] * 0.5], axis=1)  # (R, 3, 12)
    script, seqs, who = [], {"a": [], "b": [], "c": [], "d": []}, {0: "a", 1: "b"}  # who: slot -> its stream

    def op(*o):
        script.append(list(o))
        return len(script) - 1

    def step(slots, row):
        i = op("step", slots, row)
        for k, s in enumerate(slots):
            seqs[who[s]].append((i, k, row, s))  # op, position in the call, frame row, slot

    op("join"), op("join")
    for r in range(10):
        step([0, 1], r)
    op("join")
    who[2] = "c"
    for r in range(10, 40):
        step([0, 1, 2] if r % 3 == 0 else [2, 0] if r % 3 == 1 else [1], r)  # partial steps, slots in any order
    full = op("expect_error", 7, "join")  # all 3 slots are taken
    nan = op("expect_error", 5, "step", [0, 2], 40, float("nan"))
    op("expect_error", 7, "step", [2, 2], 40)
    left = op("leave", 1, str(tmp_path / "b.esstate"))
    op("expect_error", 7, "step", [1], 40)  # slot 1 has left
    op("expect_error", 6, "join_state", str(foreign))
    for r in range(40, 50):
        step([0, 2], r)
    op("join")
    who[1] = "d"
    op("leave", 2, None)
    op("join_state", str(tmp_path / "b.esstate"))
    who[2] = "b"
    for r in range(50, R):
        step([0, 1, 2] if r % 2 else [2, 1], r)
    got = _pool_child(x86, b4, 3, script, F, tmp_path)

    assert [int(got[f"slot_{i}"]) for i, o in enumerate(script) if o[0].startswith("join")] == [0, 1, 2, 1, 2]
    for i, o in enumerate(script):
        if o[0] == "expect_error":
            assert int(got[f"error_{i}"]) == o[1], (o, str(got[f"message_{i}"]))
    assert "NaN" in str(got[f"message_{nan}"]) and "slots are taken" in str(got[f"message_{full}"])
    for name, seq in seqs.items():
        sess = edgeseq.open(art.path)  # batch 1: the stream alone
        cut = sum(i < left for i, *_ in seq)
        if name == "b":  # the state b left with, resumed in Python, continues as b alone does
            resumed = edgeseq.open(art.path)
            resumed.state = edgeseq.StreamState.load(tmp_path / "b.esstate")
            assert resumed.steps == cut == 30
        for j, (i, k, row, s) in enumerate(seq):
            want = sess.push(F[row, s])
            np.testing.assert_allclose(got[f"y_{i}"][k], want.reshape(-1), atol=1e-5, err_msg=f"stream {name}, its frame {j}")
            assert bool(got[f"ready_{i}"][k]) == sess.ready, (name, j)
            if name == "b" and j >= cut:
                np.testing.assert_allclose(resumed.push(F[row, s]), want, atol=1e-5)
    assert list(got["steps"]) == [len(seqs["a"]), len(seqs["d"]), len(seqs["b"])]
