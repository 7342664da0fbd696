"""edgeseq's own ExecuTorch operators (``custom_ops=True``): the kernel against a float64 NumPy computation of the
same formula (its exp against NumPy's, to ~2 ulp, NaN kept), a Mamba-1 model exported with it against the model's
own forward over 3,000 steps on the Python executorch runtime, the native runner (x86_64 and aarch64 under qemu)
and the CLI; refusals in one line."""

import json
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import edgeseq
from edgeseq.errors import ArtifactError, ConfigError


@pytest.fixture(scope="module")
def et():
    from extras import need, need_tool  # tests/extras.py

    need("executorch", "executorch")
    need_tool("g++", "g++", "compiles edgeseq's kernels")
    from edgeseq.runtimes import kernels
    from edgeseq.runtimes.et import import_runtime

    assert "edgeseq::ssm_update.out" in kernels.load_library()
    return import_runtime().Runtime.get()


class _Op(torch.nn.Module):
    def __init__(self, name="ssm_update"):
        super().__init__()
        self.name = name

    def forward(self, s, dt, x, A, B, C, D):
        return getattr(torch.ops.edgeseq, self.name)(s, dt, x, A, B, C, D)


def _kernel(et, tmp_path, args, name="ssm_update"):
    """The op alone in a .pte (no delegate: the program calls the kernel), run on the bindings."""
    from executorch.exir import to_edge

    import edgeseq.ops  # noqa: F401  (defines the op)

    args = [torch.from_numpy(np.array(a, np.float32)) for a in args]  # a copy: v[None] has a 0 stride
    ep = torch.export.export(_Op(name), tuple(args), strict=False)
    path = tmp_path / "op.pte"
    path.write_bytes(to_edge(ep).to_executorch().buffer)
    out = et.load_program(str(path)).load_method("forward").execute(args)
    return [np.asarray(o) for o in out]


def _reference64(s, dt, x, A, B, C, D):
    s, dt, x, A, B, C, D = (np.asarray(a, np.float64) for a in (s, dt, x, A, B, C, D))
    s_new = np.exp(dt[:, :, None] * A[None]) * s + (dt * x)[:, :, None] * B[:, None, :]
    return s_new, (s_new * C[:, None, :]).sum(-1) + D * x


def _reference64_ssd(s, dt, x, A, B, C, D):
    """Mamba-2's update, head by head, in float64: head h reads group h // (H / G) of B and C."""
    s, dt, x, A, B, C, D = (np.asarray(a, np.float64) for a in (s, dt, x, A, B, C, D))
    b, H, P, N = s.shape
    G = B.shape[1] // N
    s_new, y = np.empty_like(s), np.empty((b, H * P))
    for h in range(H):
        g = h // (H // G)
        Bg, Cg = B[:, g * N:(g + 1) * N], C[:, g * N:(g + 1) * N]
        xh = x[:, h * P:(h + 1) * P]
        s_new[:, h] = np.exp(dt[:, h] * A[h])[:, None, None] * s[:, h] + (dt[:, h, None] * xh)[:, :, None] * Bg[:, None, :]
        y[:, h * P:(h + 1) * P] = (s_new[:, h] * Cg[:, None, :]).sum(-1) + D[h * P:(h + 1) * P] * xh
    return s_new, y


@pytest.mark.parametrize("N", [16, 19, 3])
@pytest.mark.parametrize("G", [1, 2])
def test_ssd_kernel_matches_float64_formula(et, tmp_path, N, G):
    rng = np.random.default_rng(N + G)
    b, H, P = 2, 4, 3
    args = [rng.standard_normal((b, H, P, N)), rng.uniform(0, 3, (b, H)), rng.standard_normal((b, H * P)),
            -np.exp(rng.uniform(-2, 3.5, H)), rng.standard_normal((b, G * N)), rng.standard_normal((b, G * N)),
            rng.standard_normal(H * P)]
    s_new, y = _kernel(et, tmp_path, args, "ssm2_update")
    args32 = [np.asarray(a, np.float32) for a in args]
    ref_s, ref_y = _reference64_ssd(*args32)
    assert s_new.shape == (b, H, P, N) and y.shape == (b, H * P)
    np.testing.assert_allclose(s_new, ref_s, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    t_s, t_y = torch.ops.edgeseq.ssm2_update(*[torch.from_numpy(a) for a in args32])
    np.testing.assert_allclose(t_s.numpy(), ref_s, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(t_y.numpy(), ref_y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("N", [16, 19, 3])  # whole vectors; vectors and a tail; the tail alone
def test_kernel_matches_float64_formula(et, tmp_path, N):
    rng = np.random.default_rng(N)
    b, E = 2, 7
    args = [rng.standard_normal((b, E, N)), rng.uniform(0, 3, (b, E)), rng.standard_normal((b, E)),
            -np.exp(rng.uniform(-2, 3.5, (E, N))), rng.standard_normal((b, N)), rng.standard_normal((b, N)),
            rng.standard_normal(E)]
    s_new, y = _kernel(et, tmp_path, args)
    args32 = [np.asarray(a, np.float32) for a in args]
    ref_s, ref_y = _reference64(*args32)
    assert s_new.shape == (b, E, N) and y.shape == (b, E)
    np.testing.assert_allclose(s_new, ref_s, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    # and the op's PyTorch form (what an eager step runs) agrees with both
    t_s, t_y = torch.ops.edgeseq.ssm_update(*[torch.from_numpy(a) for a in args32])
    np.testing.assert_allclose(t_s.numpy(), ref_s, rtol=1e-6, atol=1e-6)


def test_kernel_exp_to_two_ulp_and_nan(et, tmp_path):
    """s' = exp(dt A) s with s = 1, B = 0: the kernel's exp itself, over its whole range, against NumPy's."""
    v = np.concatenate([-np.linspace(0, 87, 4093), [-0.0, -1e-30, -87.0, -87.5, -100.0, -1e4]]).astype(np.float32)
    N = v.size
    args = [np.ones((1, 1, N)), np.ones((1, 1)), np.zeros((1, 1)), v[None], np.zeros((1, N)), np.zeros((1, N)),
            np.zeros(1)]
    got = _kernel(et, tmp_path, args)[0][0, 0].astype(np.float64)
    want = np.exp(v.astype(np.float64))
    inside = v >= -87.0
    rel = np.abs(got[inside] / want[inside] - 1)
    assert rel.max() <= 2.5e-7, (rel.max(), v[inside][rel.argmax()])  # float32 ulp is 6e-8 to 1.2e-7 relative
    assert np.all((got[~inside] >= 0) & (got[~inside] <= 1.7e-38))  # clamped at exp(-87)
    # a NaN in the state or in dt comes out NaN (the session's finite check sees it), nothing else changes
    s = np.ones((1, 2, 8), np.float32)
    s[0, 0, 3] = np.nan
    dt = np.array([[0.5, np.nan]], np.float32)
    s_new, y = _kernel(et, tmp_path, [s, dt, np.ones((1, 2)), -np.ones((2, 8)), np.ones((1, 8)), np.ones((1, 8)),
                                      np.zeros(2)])
    assert np.isnan(s_new[0, 0, 3]) and np.isfinite(np.delete(s_new[0, 0], 3)).all() and np.isnan(s_new[0, 1]).all()
    assert np.isnan(y).all()


@pytest.mark.parametrize("bad", ["A one state index too wide", "D one channel too long", "x in float64"])
def test_kernel_refuses_a_program_passing_wrong_tensors(et, tmp_path, monkeypatch, bad):
    """A program whose operands do not fit (written with the export-time check switched off): the call fails with
    ExecuTorch's error, it neither reads past nor writes into a buffer."""
    import edgeseq.ops as ops

    monkeypatch.setattr(ops, "_check", lambda *a: None)
    rng = np.random.default_rng(0)
    b, E, N = 1, 4, 8
    args = [rng.standard_normal((b, E, N)), rng.uniform(0, 1, (b, E)), rng.standard_normal((b, E)),
            -np.ones((E, N + (bad.startswith("A")))), rng.standard_normal((b, N)), rng.standard_normal((b, N)),
            np.ones(E + bad.startswith("D"))]
    args = [torch.from_numpy(np.array(a, np.float32)) for a in args]
    if bad.startswith("x"):
        args[2] = args[2].double()
    _refused(et, tmp_path, args, "ssm_update")


def _refused(et, tmp_path, args, name):
    """The op alone in a program with ``args`` (the export-time check off): executing it raises."""
    from executorch.exir import to_edge

    ep = torch.export.export(_Op(name), tuple(args), strict=False)
    path = tmp_path / "bad.pte"
    path.write_bytes(to_edge(ep).to_executorch().buffer)
    method = et.load_program(str(path)).load_method("forward")
    with pytest.raises(RuntimeError):
        method.execute(args)


def test_ssd_kernel_refuses_groups_that_do_not_divide_the_heads(et, tmp_path, monkeypatch):
    import edgeseq.ops as ops

    monkeypatch.setattr(ops, "_check", lambda *a: None)
    b, H, P, N, G = 1, 3, 2, 4, 2  # 2 groups of B and C for 3 heads
    args = [np.ones((b, H, P, N)), np.ones((b, H)), np.ones((b, H * P)), -np.ones(H), np.ones((b, G * N)),
            np.ones((b, G * N)), np.ones(H * P)]
    _refused(et, tmp_path, [torch.from_numpy(np.array(a, np.float32)) for a in args], "ssm2_update")


def _exported(tmp_path_factory, seed: int, **config):
    """A tiny mamba model exported with custom_ops=True, a 3,000-step stream and the model's own forward over it."""
    torch.manual_seed(0)
    model = edgeseq.build("mamba", d_in=3, d_out=2, d_model=16, n_layers=2, **config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(model, tmp_path_factory.mktemp("custom_ops") / "m", target="executorch", steps=2000,
                             custom_ops=True)
    x = np.random.default_rng(seed).standard_normal((3000, 3)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)[None])[0].numpy()
    return model, art, x, ref


@pytest.fixture(scope="module")
def mamba(tmp_path_factory, et):
    return _exported(tmp_path_factory, 1, d_state=10)


def test_mamba_export_calls_the_kernel_and_matches_the_model(mamba):
    model, art, x, ref = mamba
    m = art.manifest
    assert m["runtime"]["custom_ops"] == ["edgeseq::ssm_update.out"]
    assert m["graph"]["non_delegated"] == {"ssm_update": 2}  # one per layer; everything else delegated
    assert m["parity"]["max_scaled_error"] <= 1e-5 and m["model_parity"]["max_scaled_error"] <= 1e-5
    got = edgeseq.open(art.path).run(x).reshape(ref.shape)
    assert np.abs(got - ref).max() / max(1.0, np.abs(ref).max()) <= 1e-5
    # the step the export was given keeps its own arithmetic (the op was switched on in a copy)
    step = edgeseq.convert(model)
    assert not any(getattr(l, "custom_ops", False) for l in step.layers)


@pytest.fixture(scope="module")
def mamba2(tmp_path_factory, et):
    """Mamba-2 with 2 groups of 2 heads, head channels 8, state 12 (the AVX2 loop and a tail of 4)."""
    return _exported(tmp_path_factory, 2, d_state=12, variant="mamba2", head_dim=8, n_groups=2)


def test_mamba2_export_calls_its_kernel_and_matches_the_model(mamba2):
    """Over 3,000 steps against the model's own (chunked SSD) forward, on the Python runtime and the native runner."""
    _, art, x, ref = mamba2
    assert art.manifest["runtime"]["custom_ops"] == ["edgeseq::ssm2_update.out"]
    assert art.manifest["graph"]["non_delegated"] == {"ssm2_update": 2}
    got = edgeseq.open(art.path).run(x).reshape(ref.shape)
    assert np.abs(got - ref).max() / max(1.0, np.abs(ref).max()) <= 1e-5
    np.testing.assert_array_equal(edgeseq.open(art.path, runtime="native").run(x).reshape(ref.shape), got)


def test_native_runner_runs_it_identically(mamba, et):
    from extras import need_tool  # tests/extras.py

    need_tool("g++", "g++")
    _, art, x, _ = mamba
    a = edgeseq.open(art.path).run(x)
    b = edgeseq.open(art.path, runtime="native").run(x)
    np.testing.assert_array_equal(a, b)


def test_aarch64_neon_kernels_under_qemu(mamba, mamba2):
    """Both kernels' NEON forms on ARM's arithmetic (cortex-a76 under qemu), against the model: d_state 10 (Mamba-1)
    and 12 (Mamba-2), whole vectors of 4 and, for Mamba-1, a tail of 2."""
    from extras import need_tool  # tests/extras.py

    need_tool("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", "the aarch64 cross compiler")
    need_tool("qemu-aarch64", "qemu-user", "runs the aarch64 runner here")
    from edgeseq.runtimes import native

    b = native.build("aarch64")
    for _, art, x, ref in (mamba, mamba2):
        got = native.run(b, art.path, x[:1000], "cortex-a76").reshape(ref[:1000].shape)
        assert np.abs(got - ref[:1000]).max() / max(1.0, np.abs(ref[:1000]).max()) <= 1e-5


def test_refusals(mamba, tmp_path):
    model, art, _, _ = mamba
    with pytest.raises(ConfigError, match="custom_ops is an executorch option"):
        edgeseq.export(model, tmp_path / "o", target="onnx", custom_ops=True)
    assert not list(tmp_path.iterdir())
    # a manifest naming an operator this edgeseq has no kernel for, or not a list
    from edgeseq.runtimes.et import ExecuTorchRuntime

    m = json.loads(art.manifest_path.read_text())
    for bad, msg in ((["edgeseq::nope.out"], "do not provide"), ("edgeseq::ssm_update.out", "must be a list")):
        m["runtime"]["custom_ops"] = bad
        with pytest.raises(ArtifactError, match=msg):
            ExecuTorchRuntime().open_file(art.path, m)


def test_step_without_such_an_op_exports_as_before(tmp_path, et):
    torch.manual_seed(0)
    lstm = edgeseq.build("rnn", d_in=3, d_out=2, d_hidden=8)
    art = edgeseq.export(lstm, tmp_path / "l", target="executorch", steps=50, custom_ops=True)
    assert art.manifest["runtime"]["custom_ops"] == [] and art.manifest["graph"]["non_delegated_ops"] == 0


def test_cli_flag(tmp_path, et):
    from edgeseq.cli.main import app

    torch.manual_seed(0)
    d = tmp_path / "model"
    edgeseq.save(edgeseq.build("mamba", d_in=3, d_out=2, d_model=16, n_layers=1, d_state=8), d)
    r = CliRunner().invoke(app, ["export", str(d), "--target", "executorch", "--custom-ops", "--steps", "200",
                                 "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "edgeseq's own operators in the program: edgeseq::ssm_update.out" in r.output
    r = CliRunner().invoke(app, ["inspect", str(tmp_path / "a.pte")])
    assert r.exit_code == 0 and "edgeseq's own operators: edgeseq::ssm_update.out" in r.output, r.output
    r = CliRunner().invoke(app, ["export", str(d), "--target", "onnx", "--custom-ops", "--out", str(tmp_path / "b")])
    assert r.exit_code == 1 and "custom_ops is an executorch option" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_mutated_programs_end_in_ok_or_one_line(mamba, tmp_path):
    """As tests/test_fuzz_artifacts.py, for a program that calls the kernel: 12 mutated copies, each loaded and run in
    a child process (with a cache of its own: the kernels are built there first), which must not crash."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(here))
    import fuzz_cases  # tests/fuzz_cases.py

    cases = fuzz_cases.make_cases("pte", mamba[1].path, tmp_path / "pte", 12, seed=1)
    r = subprocess.run([sys.executable, str(here / "fuzz_cases.py"), "pte", *map(str, cases)], capture_output=True,
                       text=True, env={**os.environ, "EDGESEQ_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, f"the process ended with {r.returncode} (negative: a signal): {r.stderr[-500:]}"
    lines = [line[len(fuzz_cases.MARK):] for line in r.stdout.splitlines() if line.startswith(fuzz_cases.MARK)]
    assert len(lines) == len(cases) and all(line == "ok" or line.startswith("error: ") for line in lines), lines
    assert sum(line.startswith("error: ") for line in lines) >= len(cases) // 3, lines


def test_other_hosts_are_told_how_to_get_the_kernels(monkeypatch):
    import platform

    from edgeseq.errors import EdgeseqError
    from edgeseq.runtimes import kernels

    monkeypatch.setattr(kernels, "_LOADED", {})
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(EdgeseqError, match=r"on an aarch64 board, link libedgeseq_kernels.so from `edgeseq native build --arch aarch64`"):
        kernels.require(["edgeseq::ssm_update.out"], "m.pte")
