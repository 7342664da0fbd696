"""Users' models, written as users write them (not edgeseq's families): the graph converter's test subjects."""

import torch
import torch.nn.functional as F
from torch import nn


class KeywordNet(nn.Module):
    """A keyword-spotting model: Conv1d front-end left-padded with F.pad, GRU, Linear head; input (B, T, C)."""

    def __init__(self, c=10, h=32, k=5, n=6, ch=24):
        super().__init__()
        self.k = k
        self.conv = nn.Conv1d(c, ch, k)
        self.gru = nn.GRU(ch, h, batch_first=True)
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


class SpectrogramCNN(nn.Module):
    """A spectrogram model: frames (B, T, F) as an image (B, 1, F, T) with time on the last axis; Conv2d with a
    causal left F.pad along time, dilation along time, a stride and groups along frequency (inside each frame),
    then one 'same'-padded Conv2d (1 frame of look-ahead: a delay), frequency and channels flattened per frame."""

    def __init__(self, f=16, n=5):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, (3, 3), dilation=(1, 2))  # (freq, time) kernel
        self.c2 = nn.Conv2d(4, 4, (5, 3), stride=(2, 1), padding=(0, 1), groups=2)
        self.head = nn.Linear(4 * ((f - 2 - 5) // 2 + 1), n)

    def forward(self, x):  # (B, T, F)
        z = x.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        z = torch.relu(self.c1(F.pad(z, (4, 0))))  # causal: 4 frames of left padding for a dilated k=3
        z = self.c2(z)
        return self.head(z.flatten(1, 2).transpose(1, 2))


class VideoConv(nn.Module):
    """A video clip (B, T, C, H, W) with time moved to spatial axis ``axis`` (2, 3 or 4) of a Conv3d."""

    def __init__(self, axis, c=2):
        super().__init__()
        self.axis = axis
        self.conv = nn.Conv3d(c, 3, (3, 3, 3), padding=1)

    def forward(self, x):
        return torch.tanh(self.conv(x.movedim(1, self.axis))).movedim(self.axis, 1)


class FunctionalConv(nn.Module):
    """F.conv1d with the model's own weight and bias, padded on the left with F.pad: (B, C, T) layout."""

    def __init__(self, c=3, co=6, k=4, d=2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(co, c, k) * 0.3)
        self.bias = nn.Parameter(torch.randn(co))
        self.pad, self.d = (k - 1) * d, d

    def forward(self, x):
        return F.conv1d(F.pad(x, (self.pad, 0)), self.weight, self.bias, dilation=self.d)


class RunningStats(nn.Module):
    """Running reductions over time: a running mean written as cumsum / arange (integer and float counts), a
    running max and min (cummax / cummin values), and per-frame pairs (x.max over features: values and indices)."""

    def forward(self, x):  # (B, T, C)
        T = x.size(1)
        mean = x.cumsum(1) / torch.arange(1, T + 1, device=x.device).reshape(1, -1, 1)
        mean_f = torch.cumsum(x, dim=1) / torch.arange(T, dtype=x.dtype).add(1.0).unsqueeze(-1)
        hi = torch.cummax(x, dim=1).values
        lo = x.cummin(1)[0]
        peak, where = torch.max(x, -1, keepdim=True)
        return torch.cat([mean, mean_f, hi, lo, peak, where.float()], -1)
