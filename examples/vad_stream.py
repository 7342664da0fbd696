"""A published streaming model through edgeseq: Silero VAD (the ``silero-vad`` pip package, MIT licence).

Silero VAD is a voice-activity detector that runs on 512-sample chunks of 16 kHz audio (32 ms), carrying an LSTM
state and the last 64 samples of the previous chunk. Its authors ship it as TorchScript and as a hand-made stateful
ONNX file (``silero_vad/data/silero_vad.onnx``: inputs ``input`` (context + chunk), ``state``, ``sr``), with the
architecture written out in ``silero_vad/tinygrad_model.py``. There is no PyTorch module in the package, so
:class:`SileroVAD` writes that architecture in PyTorch (its weights from the authors' ONNX file) as one would train it, over a whole recording of chunks at once (its parallel form): the
previous chunk's tail as a shift along time, the STFT and convolutions per chunk, an ``nn.LSTM`` over chunks.
edgeseq's graph converter turns it into a step of one chunk; the step is exported and compared, chunk by chunk,
with the authors' own ONNX file on onnxruntime.

Run: python examples/vad_stream.py [--chunks N]   (needs: pip install silero-vad)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CHUNK, CONTEXT, SR = 512, 64, 16000  # 16 kHz: 512-sample chunks with 64 samples of the previous one before them


class SileroVAD(nn.Module):
    """(batch, chunks, 512) audio -> (batch, chunks, 1) speech probability per chunk; layer names as the authors'
    weights file names them."""

    def __init__(self):
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)  # real and imaginary parts
        self.conv1 = nn.Conv1d(129, 128, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, kernel_size=3, padding=1)
        self.lstm = nn.LSTM(128, 128, batch_first=True)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        prev = F.pad(x[..., -CONTEXT:], (0, 0, 1, 0))[:, :T]  # (B, T, 64): the previous chunk's tail, zeros first
        w = torch.cat([prev, x], dim=-1).reshape(B * T, 1, CONTEXT + CHUNK)  # (B*T, 1, 576)
        w = F.pad(w, (0, 64), mode="reflect")  # (B*T, 1, 640)
        s = self.stft_conv(w)  # (B*T, 258, 4)
        mag = (s[:, :129] ** 2 + s[:, 129:] ** 2).sqrt()  # (B*T, 129, 4)
        h = self.conv1(mag).relu()
        h = self.conv2(h).relu()
        h = self.conv3(h).relu()
        h = self.conv4(h).relu()  # (B*T, 128, 1)
        h, _ = self.lstm(h.reshape(B, T, 128))  # (B, T, 128)
        y = self.final_conv(h.relu().transpose(1, 2)).sigmoid()  # (B, 1, T)
        return y.transpose(1, 2)  # (B, T, 1)


def data_file(name: str) -> Path:
    """A file of the installed silero-vad package's data folder, found without importing the package (its
    ``__init__`` sets torch's thread count for the whole process)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("silero-vad is not installed: pip install silero-vad")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / name


# the port's parameters <- the initializers of the authors' 16 kHz ONNX file (their safetensors file holds another
# version's weights: conv1's differ by up to 4.0 from the ONNX files', which agree with each other)
WEIGHTS = {
    "stft_conv.weight": "model.stft.forward_basis_buffer",
    **{f"conv{i + 1}.{k}": f"model.encoder.{i}.reparam_conv.{k}" for i in range(4) for k in ("weight", "bias")},
    **{f"lstm.{k}_l0": f"model.decoder.rnn.{k}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "final_conv.weight": "model.decoder.decoder.2.weight", "final_conv.bias": "model.decoder.decoder.2.bias",
}


def load() -> SileroVAD:
    """The port with the weights of the authors' ``silero_vad_16k_op15.onnx`` (read with onnx's numpy_helper: no
    pickle)."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in onnx.load(str(data_file("silero_vad_16k_op15.onnx"))).graph.initializer}
    model = SileroVAD()
    model.load_state_dict({k: torch.from_numpy(numpy_helper.to_array(inits[v]).copy()) for k, v in WEIGHTS.items()})
    return model.eval()


class AuthorsOnnx:
    """The authors' stateful ONNX on onnxruntime, stepped as their wrapper steps it (context + chunk in, the
    state carried), one thread."""

    def __init__(self, name: str = "silero_vad.onnx"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(data_file(name)), so, providers=["CPUExecutionProvider"])
        self.reset()

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), np.float32)
        self.window = np.zeros((1, CONTEXT + CHUNK), np.float32)
        self.sr = np.array(SR, dtype=np.int64)

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        self.window[:, :CONTEXT] = self.window[:, -CONTEXT:]
        self.window[:, CONTEXT:] = chunk
        out, self.state = self.sess.run(None, {"input": self.window, "state": self.state, "sr": self.sr})
        return out


def audio(chunks: int, seed: int = 0) -> np.ndarray:
    """A test signal (chunks, 512): noise with bursts of a voiced-like harmonic tone, 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(chunks * CHUNK) / SR
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 560), 1))
    on = (np.sin(2 * np.pi * 0.7 * t) > 0.2).astype(np.float32)
    x = 0.02 * rng.standard_normal(t.shape) + 0.3 * on * tone
    return x.astype(np.float32).reshape(chunks, CHUNK)


def run(chunks: int = 2000, out: Path = Path("out/silero"), quiet: bool = False) -> dict:
    import edgeseq

    model = load()
    x = audio(chunks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step = edgeseq.convert(model, example=torch.from_numpy(audio(16, seed=1))[None])
        arts = {t: edgeseq.export(step, out / "silero_vad", target=t, steps=chunks, model=model,
                                  inputs=torch.from_numpy(x)[:, None]) for t in ("onnx", "executorch")}
    theirs = AuthorsOnnx()
    ref = np.concatenate([theirs(c[None]) for c in x])  # (chunks, 1)
    with torch.no_grad():
        parallel = model(torch.from_numpy(x)[None])[0].numpy()
    result = {"chunks": chunks, "state_bytes": step.state_spec.bytes_per_stream,
              "port_vs_authors_onnx_max_abs": float(np.abs(parallel - ref).max())}
    for target, art in arts.items():
        got = edgeseq.open(art.path).run(x)
        result[f"{target}_vs_authors_onnx_max_abs"] = float(np.abs(got - ref).max())
        result[f"{target}_artifact"] = str(art.path)
    result["speech_chunks_authors"] = int((ref > 0.5).sum())
    if not quiet:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("out/silero"))
    a = ap.parse_args()
    run(a.chunks, a.out)
