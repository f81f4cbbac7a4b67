"""Pictures: spectrograms of noisy, denoised and clean audio and of what was removed.

Plot functions take ``axes=None`` and return the figure; callers save it. New
figures are plain ``Figure`` objects on an Agg canvas, without pyplot: no global state, no
windows, and importing this module leaves the user's matplotlib backend alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from cassette_denoise.metrics import LSD_HOP, LSD_N_FFT, power_spectrogram

#: Power of a full-scale sine's peak bin under the periodic Hann window (``|X| = n_fft / 4``).
_FULL_SCALE_POWER = (LSD_N_FFT / 4) ** 2
DYNAMIC_RANGE_DB = 120.0  # hiss sits ~90-100 dB below full scale per bin; keep it visible
COLORMAP = "magma"


def spectrogram_db(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectrogram in dB re full scale of mono ``(samples,)`` audio.

    Uses the metrics' STFT (n_fft 2048, hop 512, frames fully inside the signal).

    Returns:
        ``(db, frequencies_hz, times_s)``: ``(bins, frames)``, ``(bins,)`` and the frame centres ``(frames,)``.
    """
    if np.shape(audio)[-1] < LSD_N_FFT:
        raise ValueError(f"a spectrogram needs at least {LSD_N_FFT} samples, got shape {np.shape(audio)}")
    power = power_spectrogram(np.atleast_2d(audio))[0].T
    db = 10 * np.log10(power / _FULL_SCALE_POWER + 1e-20)
    frequencies = np.fft.rfftfreq(LSD_N_FFT, 1 / sample_rate)
    times = (np.arange(power.shape[1]) * LSD_HOP + LSD_N_FFT / 2) / sample_rate
    return db, frequencies, times


def plot_comparison(
    noisy: np.ndarray,
    denoised: np.ndarray,
    sample_rate: int,
    *,
    clean: np.ndarray | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Spectrograms of noisy, denoised, clean (when given) and removed = noisy - denoised, on one dB scale.

    Args:
        noisy, denoised, clean: ``(channels, samples)`` or ``(samples,)``, same rate and length;
            stereo is shown as its mid channel (the mean), what a listener hears in the centre.
        axes: one per panel (3, or 4 with ``clean``); default: a new figure with the panels stacked.
    """
    panels = {"noisy": noisy, "denoised": denoised}
    if clean is not None:
        panels["clean"] = clean
    mids = {name: np.atleast_2d(audio).mean(axis=0) for name, audio in panels.items()}
    if len({mid.shape for mid in mids.values()}) != 1:
        raise ValueError(f"signals differ in length: { {name: mid.shape for name, mid in mids.items()} }")
    mids["removed (noisy − denoised)"] = mids["noisy"] - mids["denoised"]

    if axes is None:
        fig = _new_figure(height_in=2.4 * len(mids))
        axes = fig.subplots(len(mids), 1, sharex=True, sharey=True)
    elif len(axes) != len(mids):
        raise ValueError(f"need {len(mids)} axes for the panels {list(mids)}, got {len(axes)}")
    spectra = {name: spectrogram_db(mid, sample_rate) for name, mid in mids.items()}
    # One colour scale for all panels, topped by the loudest, so that levels compare directly.
    top_db = max(float(spectrum[0].max()) for spectrum in spectra.values())
    for ax, (name, spectrum) in zip(axes, spectra.items()):
        image = _draw(ax, spectrum, sample_rate, top_db=top_db, title=name)
    for ax in axes[:-1]:
        ax.set_xlabel("")
    fig = axes[0].figure
    fig.colorbar(image, ax=list(axes), label="dB re full scale", fraction=0.03)
    return fig


def _draw(
    ax: Axes, spectrum: tuple[np.ndarray, np.ndarray, np.ndarray], sample_rate: int, *, top_db: float, title: str | None
) -> AxesImage:
    db, frequencies, times = spectrum
    half_hop = LSD_HOP / sample_rate / 2
    image = ax.imshow(
        db, origin="lower", aspect="auto", cmap=COLORMAP, vmin=top_db - DYNAMIC_RANGE_DB, vmax=top_db,
        extent=(times[0] - half_hop, times[-1] + half_hop, 0, frequencies[-1] / 1000),
    )
    ax.set_ylabel("frequency (kHz)")
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, loc="left")
    return image


def _new_figure(*, height_in: float) -> Figure:
    fig = Figure(figsize=(11, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def training_curves(rows: list[dict[str, float]]) -> Figure:
    """Loss and validation curves from a training log (rows of ``training.state.read_log``)."""
    figure = Figure(figsize=(11, 4))
    loss_ax, score_ax = figure.subplots(1, 2)
    steps = [row["step"] for row in rows]
    loss_ax.plot(steps, [row.get("train_loss", np.nan) for row in rows], label="training")
    loss_ax.plot(steps, [row.get("val_loss", np.nan) for row in rows], label="validation")
    loss_ax.set(xlabel="step", ylabel="loss", title="Loss")
    loss_ax.legend()
    score_ax.plot(steps, [row.get("val_si_sdr_improvement_db", np.nan) for row in rows], label="SI-SDR gain (dB)")
    score_ax.plot(steps, [row.get("val_lsd_f80_db", np.nan) for row in rows], label="LSDf80 (dB)")
    score_ax.set(xlabel="step", title="Validation")
    score_ax.legend()
    figure.tight_layout()
    return figure


def tape_thumbnail(before_db: np.ndarray, after_db: np.ndarray) -> Figure:
    """A small before | after spectrogram for a report row.

    Args:
        before_db, after_db: ``(rows, columns)`` dB re full scale, rows on a log-frequency axis
            (as :func:`cassette_denoise.batch.stats.measure` gives them); both share one colour scale.
    """
    figure = Figure(figsize=(3.2, 0.9))
    FigureCanvasAgg(figure)
    top = max(float(np.max(before_db)), float(np.max(after_db)), -DYNAMIC_RANGE_DB)
    for position, (image, label) in enumerate(((before_db, "before"), (after_db, "after"))):
        ax = figure.add_axes((position * 0.5 + 0.005, 0.0, 0.49, 1.0))
        ax.imshow(image, origin="lower", aspect="auto", cmap=COLORMAP, vmin=top - DYNAMIC_RANGE_DB, vmax=top)
        ax.text(0.02, 0.95, label, transform=ax.transAxes, color="white", fontsize=6, va="top")
        ax.set_axis_off()
    return figure
