"""The seed's U-Net, predicting a 0-1 mask over a magnitude spectrogram. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the U-Net.

    ``levels`` resolutions with two 3×3 convolutions each on the way down (the seed's "10 conv layers
    in 5 levels"), mirrored on the way up with skip concatenation. Width grows by ``width_growth`` per
    level from ``base_width`` (the seed doubled it from 64, ≈ 30 M parameters; 16 gives ≈ 1.9 M).
    """

    base_width: int = 16
    levels: int = 5
    #: Each level's width over the one above. Doubling spends the same arithmetic on every level (a
    #: quarter of the positions, four times the channel pairs); growing by less makes the coarse levels,
    #: and the whole network, cheaper.
    width_growth: float = 2.0
    dropout: float = 0.5
    dropout_levels: int = 2
    negative_slope: float = 0.2
    #: Initial bias of the mask logit: sigmoid(3) ≈ 0.95 (−0.4 dB), so training starts close to passing
    #: everything through, yet not so deep in the sigmoid's flat tail (σ' = 0.045) that it cannot move.
    initial_mask_logit: float = 3.0
    #: A second input channel with each bin's noise floor (:func:`spectral.features`).
    #: False is the seed's single-channel input.
    noise_floor_input: bool = False
    #: The network's finest level works on ``patch`` × ``patch`` blocks of bins and frames, each folded into
    #: channels on the way in and unfolded into as many mask values on the way out (space-to-depth). 1 is
    #: the seed's full resolution; 2 spends a quarter of the positions, where a narrow full-resolution level
    #: costs the most time per operation.
    patch: int = 1

    def __post_init__(self):
        if (self.base_width < 1 or self.levels < 2 or not 1.0 <= self.width_growth <= 4.0
                or self.patch not in (1, 2, 4)):
            raise ValueError(f"UNetConfig needs base_width ≥ 1, levels ≥ 2, width_growth in [1, 4] and patch "
                             f"1, 2 or 4, got {self}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels at each level, finest first."""
        return tuple(round(self.base_width * self.width_growth**level) for level in range(self.levels))

    @property
    def input_channels(self) -> int:
        return 1 + int(self.noise_floor_input)

    @property
    def frame_multiple(self) -> int:
        """Input frequency and time sizes must be multiples of this (the patch, then one halving per pooling)."""
        return self.patch * 2 ** (self.levels - 1)


def _double_conv(channels_in: int, channels_out: int, negative_slope: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1),
        nn.LeakyReLU(negative_slope, inplace=True),  # in place: one full-resolution copy less per layer
        nn.Conv2d(channels_out, channels_out, 3, padding=1),
        nn.LeakyReLU(negative_slope, inplace=True),
    )


class UNet(nn.Module):
    """Mask estimator: ``(batch, config.input_channels, freq, frames)`` features in ``[-1, 1]`` -> mask in ``[0, 1]``
    shaped ``(batch, 1, freq, frames)``."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        widths = config.widths
        slope = config.negative_slope
        self.down = nn.ModuleList()
        channels = config.input_channels * config.patch**2
        for width in widths:
            self.down.append(_double_conv(channels, width, slope))
            channels = width
        self.dropouts = nn.ModuleList(
            nn.Dropout(config.dropout if level >= config.levels - config.dropout_levels else 0.0)
            for level in range(config.levels)
        )
        self.pool = nn.MaxPool2d(2)
        # The seed's decoder: nearest upsampling, then a 2×2 convolution to the finer level's width, then
        # the skip connection is concatenated and two 3×3 convolutions mix them. ``forward`` computes
        # each ``up`` block's first three steps at once with :func:`upsampled_conv` (same result).
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width, coarser in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.up.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.ZeroPad2d((0, 1, 0, 1)),  # "same" padding for an even kernel, on the far side as in Keras
                nn.Conv2d(coarser, width, 2),
                nn.LeakyReLU(slope, inplace=True),
            ))
            self.merge.append(_double_conv(width * 2, width, slope))
        self.head = nn.Conv2d(widths[0], config.patch**2, 1)
        self._phase_cache: dict[int, tuple] = {}
        self._initialise()

    def _initialise(self) -> None:
        if self.head.weight.is_meta:
            # A model on the meta device only describes shapes (the checkpoint loader's checks); random
            # initialisation there would load torch's Python meta kernels, about 70 MB, for nothing.
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # He-normal for leaky ReLU, as in the seed.
                nn.init.kaiming_normal_(module.weight, a=self.config.negative_slope, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.constant_(self.head.bias, self.config.initial_mask_logit)

    def forward(self, features: torch.Tensor, *, logits: bool = False) -> torch.Tensor:
        """``(batch, input_channels, freq, frames)`` -> mask ``(batch, 1, freq, frames)`` in ``[0, 1]``, or with
        ``logits`` the values before the sigmoid (training keeps them in range, see ``training.losses.logit_penalty``)."""
        multiple = self.config.frame_multiple
        if features.shape[-1] % multiple or features.shape[-2] % multiple:
            raise ValueError(f"UNet input {tuple(features.shape)}: freq and frames must be multiples of {multiple}")
        skips = []
        x = F.pixel_unshuffle(features, self.config.patch) if self.config.patch > 1 else features
        for level, (block, dropout) in enumerate(zip(self.down, self.dropouts)):
            if level:
                x = self.pool(x)
            x = dropout(block(x))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            conv, activation = up[2], up[3]  # up[0] and up[1], upsampling and padding, are folded into the call
            x = merge(torch.cat([activation(upsampled_conv(x, conv, phases=self._inference_phases(conv))), skip],
                                dim=1))
        values = self.head(x)
        if self.config.patch > 1:
            values = F.pixel_shuffle(values, self.config.patch)
        return values if logits else torch.sigmoid(values)

    def _inference_phases(self, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:func:`phase_weights` of ``conv``, kept while its weights stay the same (a denoiser runs thousands
        of tiles with one set); None where gradients are on, so that training differentiates through them."""
        if torch.is_grad_enabled():
            return None
        weight, bias = conv.weight, conv.bias
        key = (weight._version, weight.data_ptr(), bias._version, bias.data_ptr(), weight.dtype, weight.device)
        cached = self._phase_cache.get(id(conv))
        if cached is None or cached[0] != key:
            # In the weights' own precision: autocast casts them for each convolution as it does the others'.
            with torch.autocast(weight.device.type, enabled=False):
                cached = self._phase_cache[id(conv)] = (key, phase_weights(conv))
        return cached[1]


#: How the 2 taps of a 2×2 kernel along one axis of the upsampled signal fall onto the original
#: samples, ``[phase, tap, original tap]``: an even output sample sees its source sample twice, an odd
#: one its source and the next.
_PHASE_TAPS = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])


def phase_weights(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights and bias of the one convolution :func:`upsampled_conv` runs for ``conv`` (2×2):
    ``(4 · out, in, 2, 2)`` and ``(4 · out,)``, output channel ``(2a + b) · out + o`` for phase ``(a, b)``."""
    weight = conv.weight
    taps = _PHASE_TAPS.to(weight)
    phases = torch.einsum("apt,bqs,oipq->aboits", taps, taps, weight)
    return phases.reshape(4 * weight.shape[0], weight.shape[1], 2, 2), conv.bias.repeat(4)


def upsampled_conv(x: torch.Tensor, conv: nn.Conv2d, *,
                   phases: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``conv`` (2×2) over ``x`` upsampled ×2 (nearest) and zero-padded by one on the far sides,
    computed at ``x``'s resolution: ``(batch, in, H, W)`` -> ``(batch, out, 2H, 2W)``.

    Each of the four output phases is a 2×2 convolution of ``x`` itself, so one convolution with
    four times the outputs, interleaved, gives the same values without building the upsampled
    tensor: the same arithmetic, about 10 % less time for the whole network on a CPU. The output
    has the input's memory layout (the interleave is free for ``channels_last``, the denoiser's).
    """
    out_channels = conv.weight.shape[0]
    weight, bias = phases if phases is not None else phase_weights(conv)
    y = F.conv2d(F.pad(x, (0, 1, 0, 1)), weight, bias)  # channel (2a + b) * out + o
    batch, _, height, width = y.shape
    y = (y.permute(0, 2, 3, 1).reshape(batch, height, width, 2, 2, out_channels)
         .permute(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, out_channels))
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return y.permute(0, 3, 1, 2).contiguous(memory_format=layout)


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
