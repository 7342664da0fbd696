import logging
import warnings

import pytest
import torch

import edgeseq

for _name in ("torch.onnx", "torchao", "onnxscript", "torch._dynamo", "torch.export"):
    logging.getLogger(_name).setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_lstm():
    """A 2-layer LSTM classifier-shaped model (untrained; parity does not need training)."""
    return edgeseq.build("rnn", d_in=5, d_out=3, cell="lstm", d_hidden=16, num_layers=2, task="sequence")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """One tiny LSTM exported to every target once per session (ExecuTorch lowering takes seconds)."""
    torch.manual_seed(1)
    model = edgeseq.build("rnn", d_in=5, d_out=3, cell="lstm", d_hidden=16, num_layers=2)
    model.train_length = 50
    step = edgeseq.convert(model)
    out = tmp_path_factory.mktemp("artifacts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arts = {t: edgeseq.export(step, out / "lstm", target=t, steps=1000) for t in ("onnx", "executorch")}
    return {"model": model, "step": step, "dir": out, **arts}
