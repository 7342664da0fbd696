"""Users' models, written as users write them (not edgeseq's families): the graph converter's test subjects."""

import torch
import torch.nn.functional as F
from torch import nn


class KeywordNet(nn.Module):
    """A keyword-spotting model: Conv1d front-end left-padded with F.pad, GRU, Linear head; input (B, T, C)."""

    def __init__(self, c=10, h=32, k=5, n=6):
        super().__init__()
        self.k = k
        self.conv = nn.Conv1d(c, 24, k)
        self.gru = nn.GRU(24, h, batch_first=True)
        self.head = nn.Linear(h, n)

    def forward(self, x):
        z = F.pad(x.transpose(1, 2), (self.k - 1, 0))
        z = torch.relu(self.conv(z)).transpose(1, 2)
        z, _ = self.gru(z)
        return self.head(z)


class Chomp(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return x[:, :, :-self.p].contiguous()


class TCNBlock(nn.Module):
    """The residual block of much published TCN code: symmetric padding, then the right side chomped."""

    def __init__(self, c_in, c_out, k, d, dropout=0.1):
        super().__init__()
        p = (k - 1) * d
        self.conv1, self.chomp1 = nn.Conv1d(c_in, c_out, k, padding=p, dilation=d), Chomp(p)
        self.conv2, self.chomp2 = nn.Conv1d(c_out, c_out, k, padding=p, dilation=d), Chomp(p)
        self.drop = nn.Dropout(dropout)
        self.down = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        y = self.drop(torch.relu(self.chomp1(self.conv1(x))))
        y = self.drop(torch.relu(self.chomp2(self.conv2(y))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ChompTCN(nn.Module):
    """(B, C, T) in and out: time_axis=-1."""

    def __init__(self, c_in=4, width=16, levels=3, k=3, c_out=3):
        super().__init__()
        self.blocks = nn.Sequential(*[TCNBlock(c_in if i == 0 else width, width, k, 2**i) for i in range(levels)])
        self.out = nn.Conv1d(width, c_out, 1)

    def forward(self, x):
        return self.out(self.blocks(x))


class AudioFrontLSTM(nn.Module):
    """Raw audio in frames of 64 samples (B, T, 64): a per-frame sub-network (time folded into the batch, reflect
    padding and a strided convolution inside the frame, magnitudes, a mean over the frame), then an LSTM
    (batch_first=False, proj_size) and a LayerNorm + Linear head."""

    def __init__(self, samples=64, h=24, n=5):
        super().__init__()
        self.filters = nn.Conv1d(1, 8, 9, stride=4)
        self.norm_in = nn.LayerNorm(8)
        self.lstm = nn.LSTM(8, h, num_layers=2, proj_size=12)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, n)

    def forward(self, x):
        B, T, S = x.shape
        z = x.reshape(B * T, 1, S)
        z = F.pad(z, (4, 4), mode="reflect")
        z = self.filters(z).abs().mean(-1)  # (B*T, 8): one feature vector per frame
        z = self.norm_in(z.reshape(B, T, 8)).transpose(0, 1)  # (T, B, 8)
        z, _ = self.lstm(z)
        return self.head(self.norm(z.transpose(0, 1)))


class SameConvResidual(nn.Module):
    """A non-causal 'same' convolution (2 frames of look-ahead) in a residual: the step is 2 frames late and the
    skip path waits for it."""

    def __init__(self, c=6):
        super().__init__()
        self.conv = nn.Conv1d(c, c, 5, padding=2)
        self.norm = nn.BatchNorm1d(c)

    def forward(self, x):  # (B, C, T)
        return x + self.norm(torch.tanh(self.conv(x)))


class Context(nn.Module):
    """Time shifts and running reductions: the previous frame by pad-and-slice, frame differences, the previous
    frame concatenated with the current one, a running sum and a running product."""

    def __init__(self, c=5, n=4):
        super().__init__()
        self.head = nn.Linear(4 * c, n)

    def forward(self, x):  # (B, T, C)
        prev = F.pad(x, (0, 0, 1, 0))[:, :-1]
        diff = x - prev
        total = torch.cumsum(x, dim=1)
        prod = torch.sigmoid(x).cumprod(1)
        return self.head(torch.cat([prev, diff, total, prod], dim=-1))
