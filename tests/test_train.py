import numpy as np
import torch

import edgeseq
from edgeseq.data import load_dataset
from edgeseq.train import TrainConfig, evaluate, fit, stream_outputs, stream_predictions


def test_lstm_learns_japanese_vowels_and_streams_the_same_predictions():
    ds = load_dataset("japanese-vowels")
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=12, d_out=9, task="classify", d_hidden=32)
    chance = evaluate(model, "classify", ds.test)["accuracy"]
    result = fit(model, ds, TrainConfig(epochs=25))
    acc = result.metrics["accuracy"]
    assert acc >= 0.88 and acc > chance + 0.5, (chance, acc)  # LSTMs reach ~0.95 on this set
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert model.train_length == 29
    preds = stream_predictions(edgeseq.open(model), ds.test)  # frame by frame through the step form
    x, lengths, _ = ds.test.tensors()
    with torch.no_grad():
        logits = model.eval()(x, lengths)  # the parallel form, each series' last valid step
    np.testing.assert_array_equal(preds, logits.argmax(-1).numpy())  # the same class for every series
    streamed = stream_outputs(edgeseq.open(model), ds.test)
    np.testing.assert_allclose(streamed, logits.numpy(), atol=1e-4)  # and the same logits
    assert int((preds == ds.test.y).sum()) == round(acc * len(ds.test))


def test_sequence_task_loss_is_masked_mse():
    from edgeseq.data import SequenceDataset, Split

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 20, 2)).astype(np.float32)
    lengths = rng.integers(5, 21, 16)
    y = np.cumsum(x, axis=1)[..., :1].astype(np.float32) * 0.1  # a running sum: needs memory
    split = Split(x, lengths.astype(np.int64), y)
    ds = SequenceDataset("toy", "sequence", 2, 1, split, split)
    model = edgeseq.build("rnn", d_in=2, d_out=1, d_hidden=16)
    before = evaluate(model, "sequence", split)
    after = fit(model, ds, TrainConfig(epochs=60, batch_size=8)).metrics
    assert after["mse"] < 0.3 * before["mse"]
    # the metric ignores padding: changing padded targets changes nothing
    y2 = y.copy()
    for i, n in enumerate(lengths):
        y2[i, n:] = 100.0
    assert evaluate(model, "sequence", Split(x, lengths.astype(np.int64), y2)) == after
