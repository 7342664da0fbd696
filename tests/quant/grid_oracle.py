"""An independent model of an int8 LSTM step at the grid level, in numpy float64, and a teacher-forced check of a
stream session against it.

The oracle takes only the numbers a quantized layer is defined by (integer weights, weight scales and zero points,
bias, calibrated activation scales and zero points) and writes the arithmetic out itself: fake quantization,
the matrix products, PyTorch's LSTM gate order and the head. It shares no code with ``edgeseq.quant``.

``grid_check`` runs a session step by step; at each step the oracle starts from the session's own state, so an
error never compounds and every step is judged alone:

- int8-static: the head's output is an integer number of its output grid steps; the session must give the
  oracle's grid point (0 steps off; float rounding at a .5 tie may move one value one step) and the oracle's
  float state (1e-5), at >= 99.5% of steps, and never more than one output step off.
- int8-dynamic: activations are quantized per call, so the output is on no fixed grid; one input value moved by
  one step of its grid moves an output by at most ``s_x * max|W|``: the session must match the oracle to 1e-5 at
  >= 99% of steps (XNNPACK's own choice of per-call qparams can differ from the reference formula at a tie), and
  stay within that one-step bound everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QMIN, QMAX = -128, 127
EPS = 2.0**-12  # smallest activation scale of the reference formula (quantized_decomposed.choose_qparams)
EXACT = 1e-5


def fake_quant(x, scale, zp):
    q = np.clip(np.round(x / scale) + zp, QMIN, QMAX)
    return (q - zp) * scale


def dynamic_qparams(x):
    """Per-tensor int8 affine qparams over the range of x widened to include 0: scale = (max - min) / 255 (in
    float32, as the reference op computes it), zero point = -128 - round(min / scale)."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = max(float(np.float32((np.float32(hi) - np.float32(lo)) / np.float32(QMAX - QMIN))), EPS)
    zp = int(np.clip(QMIN - np.round(lo / scale), QMIN, QMAX))
    return scale, zp


@dataclass
class Layer:
    w_q: np.ndarray  # (out, in) the weight integers
    w_scale: np.ndarray  # (out,)
    w_zp: np.ndarray  # (out,)
    bias: np.ndarray  # (out,)
    act: str  # "dynamic" | "static"
    in_q: tuple[float, int] | None  # static: calibrated (scale, zero point) of the input and of the output
    out_q: tuple[float, int] | None
    last_in_scale: float = 0.0  # dynamic: the input scale of the last call

    @classmethod
    def of(cls, q) -> "Layer":
        f64 = lambda t: t.detach().numpy().astype(np.float64)  # noqa: E731
        return cls(f64(q.weight_q), f64(q.weight_scale), f64(q.weight_zero_point), f64(q.bias), q.act, q.in_q, q.out_q)

    @property
    def weight(self) -> np.ndarray:
        return (self.w_q - self.w_zp[:, None]) * self.w_scale[:, None]

    def __call__(self, x):
        if self.act == "dynamic":
            s, zp = dynamic_qparams(x)
            self.last_in_scale = s
            return fake_quant(x, s, zp) @ self.weight.T + self.bias
        y = fake_quant(x, *self.in_q) @ self.weight.T + self.bias
        return fake_quant(y, *self.out_q)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


@dataclass
class LSTMGridOracle:
    """An ``RNNStep`` of LSTM layers with a head, every linear layer int8 (``edgeseq.quant.QuantLinear``)."""

    gates: list[Layer]
    head: Layer
    hidden: int

    @classmethod
    def from_step(cls, step) -> "LSTMGridOracle":
        return cls([Layer.of(cell.gates) for cell in step.layers], Layer.of(step.head), step.layers[0].d_hidden)

    def step(self, x, state):
        """x: (1, d_in); state: [h0, c0, h1, c1, ...], each (1, H). Returns y (1, d_out) and the next state."""
        H, new, inp = self.hidden, [], x
        for i, gates in enumerate(self.gates):
            h, c = state[2 * i], state[2 * i + 1]
            g = gates(np.concatenate([inp, h], axis=-1))  # PyTorch's gate order: i, f, g, o
            gi, gf, gg, go = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
            c = sigmoid(gf) * c + sigmoid(gi) * np.tanh(gg)
            h = sigmoid(go) * np.tanh(c)
            new += [h, c]
            inp = h
        return self.head(inp), new


@dataclass
class GridReport:
    steps: int
    out_error: np.ndarray  # per step: max abs output error
    out_bound: np.ndarray  # per step: one step of the output grid (static) / of the head's input grid (dynamic)
    state_error: np.ndarray  # per step: max abs error of the next state

    @property
    def exact_outputs(self) -> float:
        """Fraction of steps whose output is the oracle's (to float rounding)."""
        return float((self.out_error <= np.maximum(EXACT, 1e-3 * self.out_bound)).mean())

    @property
    def exact_states(self) -> float:
        return float((self.state_error <= EXACT).mean())

    @property
    def worst_in_steps(self) -> float:
        """The worst output error in grid steps."""
        return float((self.out_error / self.out_bound).max())

    def ok(self, scheme: str) -> bool:
        need = 0.995 if scheme == "int8-static" else 0.99
        return self.exact_outputs >= need and self.exact_states >= need and self.worst_in_steps <= 1.0 + 1e-3

    def summary(self) -> dict:
        return {"steps": self.steps, "exact_outputs": self.exact_outputs, "exact_states": self.exact_states,
                "worst_output_in_grid_steps": self.worst_in_steps, "max_state_error": float(self.state_error.max())}


def grid_check(oracle: LSTMGridOracle, sess, xs) -> GridReport:
    """Push ``xs`` (T, d_in) through ``sess``; at every step compare with the oracle run from the session's state."""
    import warnings

    warnings.filterwarnings("ignore", message="stream passed the training length")  # long streams on purpose
    head = oracle.head
    out_err, bound, state_err = [], [], []
    for t in range(len(xs)):
        state = [np.asarray(a, dtype=np.float64) for a in sess.state.tensors]
        y_ref, s_ref = oracle.step(xs[t][None].astype(np.float64), state)
        y = sess.push(xs[t])
        out_err.append(float(np.abs(y - y_ref[0]).max()))
        bound.append(head.out_q[0] if head.act == "static" else head.last_in_scale * float(np.abs(head.weight).max()))
        state_err.append(max(float(np.abs(np.asarray(a, np.float64) - b).max()) for a, b in zip(sess.state.tensors, s_ref)))
    return GridReport(len(xs), np.array(out_err), np.array(bound), np.array(state_err))
