"""Property-based tests (hypothesis): random small configs of every family keep step/parallel parity; random
command lines of every command end in exit 0 or one error line, never a traceback."""

import pytest
import torch

from extras import need  # tests/extras.py

hypothesis = need("hypothesis", "dev", "the property-based tests")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import edgeseq  # noqa: E402

SETTINGS = dict(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

CONFIGS = {
    "rnn": st.fixed_dictionaries({
        "cell": st.sampled_from(["lstm", "gru", "rnn_tanh", "rnn_relu"]), "d_hidden": st.integers(1, 12),
        "num_layers": st.integers(1, 3), "bias": st.booleans()}),
    "aaren": st.integers(1, 3).flatmap(lambda h: st.fixed_dictionaries({
        "n_heads": st.just(h), "d_model": st.integers(1, 4).map(lambda k: k * h), "n_layers": st.integers(1, 2),
        "d_ff": st.integers(1, 16)})),
    "mamba": st.fixed_dictionaries({
        "d_model": st.integers(2, 12), "n_layers": st.integers(1, 2), "d_state": st.integers(1, 8),
        "d_conv": st.integers(2, 4), "expand": st.integers(1, 2)}),
    "continual": st.fixed_dictionaries({
        "channels": st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple), "kernel_size": st.sampled_from([1, 2, 3, 5]),
        "dilation_growth": st.integers(1, 3), "pool": st.sampled_from(["none", "avg", "max"]), "residual": st.booleans()}),
}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_random_configs_keep_step_parallel_parity(family):
    @settings(**SETTINGS)
    @given(cfg=CONFIGS[family], d_in=st.integers(1, 5), d_out=st.integers(1, 4), seed=st.integers(0, 2**16))
    def check(cfg, d_in, d_out, seed):
        torch.manual_seed(seed)
        model = edgeseq.build(family, d_in=d_in, d_out=d_out, **cfg)
        step = edgeseq.convert(model)
        x = torch.randn(2, 60, d_in, generator=torch.Generator().manual_seed(seed))
        report = edgeseq.check_parity(model, step, x)
        assert report.max_scaled_error <= 1e-4, (family, cfg, report.summary())

    check()


# --------------------------------------------------------------------------------------------- the command line
OPTIONS = {
    "train": ["--family", "--data", "--epochs", "--lr", "--batch-size", "--set", "--out", "--label-col", "--task"],
    "convert": ["--steps", "--batch", "--tolerance", "--json", "--time-axis"],
    "export": ["--target", "--out", "--batch", "--steps", "--tolerance"],
    "quantize": ["--scheme", "--target", "--calib", "--state", "--weights", "--eval-steps", "--budget", "--out"],
    "prune": ["--method", "--amount", "--scope", "--n", "--m", "--finetune-epochs", "--data", "--out"],
    "stream": ["--input", "--output", "--runtime", "--state-in", "--state-out"],
    "inspect": ["--json"],
    "profile": ["--steps", "--warmup", "--streams", "--device", "--input", "--out"],
    "devices": ["--json"],
    "check-device": ["--device", "--frames", "--input"],
}
VALUES = ["0", "-1", "3", "1e9", "nan", "abc", "", "onnx", "executorch", "rnn", "cell=gru", "x=", "nosuch.npz",
          "japanese-vowels", "int8-static", "a=b=c", "../..", "--", "-", "structured", "9999999999999999999"]


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                    HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_command_lines_end_in_exit_0_or_one_line(data, tmp_path):
    """Commands that would run long (a real train/export/profile) are given bad values on purpose: the property is
    that whatever the arguments, the command ends in exit 0, or one 'error:' line with exit 1 (bad input) or 2 (a
    command line that does not parse); never a traceback."""
    from typer.testing import CliRunner

    from edgeseq.cli.main import app

    (tmp_path / "README.md").write_text("a file: an --out under it cannot be written")
    cmd = data.draw(st.sampled_from(sorted(OPTIONS)))
    args = [cmd]
    if cmd in ("convert", "export", "quantize", "prune", "inspect", "stream", "profile", "check-device"):
        args.append(data.draw(st.sampled_from(["nosuch", str(tmp_path), "README.md"])))
    for opt in data.draw(st.lists(st.sampled_from(OPTIONS[cmd]), max_size=4)):
        args += [opt, data.draw(st.sampled_from(VALUES))]
    if cmd in ("train", "export", "quantize", "prune", "profile"):  # never a long real run: force a bad value
        args += ["--out", str(tmp_path / "README.md" / "x")]
    r = CliRunner().invoke(app, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception), r.output[-500:])
    assert "Traceback" not in r.output, (args, r.output)
    if r.exit_code:
        assert r.exit_code in (1, 2), (args, r.exit_code, r.output)
        assert sum(line.startswith("error:") for line in r.output.splitlines()) == 1, (args, r.output)
