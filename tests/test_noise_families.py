"""Noise families: deterministic per seed, the requested slope, level and line frequencies."""

import json

import numpy as np
import pytest
import scipy.signal

from cassette_denoise.simulate.families import (
    FALLING_TAPE_LINE_HEIGHT_DB,
    FALLING_TAPE_LINES_HZ,
    FAMILIES,
    LINE_BANDWIDTH_HZ,
    Floor,
    FloorParams,
    OffSpeedHum,
    TonalLines,
    TonalLinesParams,
    Whine,
    family_noise,
    family_params_to_json,
    sample_family,
)

SR = 44_100


def level_dbfs(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)))


def welch_db(x: np.ndarray, *, nperseg: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """One-sided PSD in dB re full scale² per Hz, averaged over channels."""
    freqs, psd = scipy.signal.welch(x, SR, nperseg=nperseg)
    return freqs, 10 * np.log10(np.mean(np.atleast_2d(psd), axis=0) + 1e-30)


def floor(tilt: float, *, level: float = -50.0, bumps=((), (), ()), seed: int = 3) -> FloorParams:
    return FloorParams(level_dbfs=level, tilt_db_per_octave=tilt, bump_centres_hz=bumps[0],
                       bump_gains_db=bumps[1], bump_widths_octaves=bumps[2], seed=seed)


def lines(frequencies, levels, *, drift_percent: float = 0.0, drift_hz: float = 0.25) -> TonalLinesParams:
    return TonalLinesParams(frequencies_hz=tuple(frequencies), levels_dbfs=tuple(levels),
                            phases_rad=(0.3,) * len(frequencies), drift_percent=drift_percent, drift_hz=drift_hz,
                            drift_phase_rad=0.0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_is_deterministic_per_seed_and_another_seed_differs(name):
    music = (0.1 * np.random.default_rng(0).standard_normal((2, SR // 2))).astype(np.float32)
    kept = music.copy()
    first = sample_family(np.random.default_rng(5), name)
    again = sample_family(np.random.default_rng(5), name)
    other = sample_family(np.random.default_rng(6), name)
    assert first == again and first != other
    noise = family_noise(music, SR, first)
    np.testing.assert_array_equal(noise, family_noise(music, SR, again))
    assert not np.array_equal(noise, family_noise(music, SR, other))
    assert noise.shape == music.shape and noise.dtype == np.float32 and np.isfinite(noise).all()
    np.testing.assert_array_equal(music, kept)
    json.dumps(family_params_to_json(first))  # loggable with the example


@pytest.mark.parametrize("tilt", [-6.0, -3.0, 0.0, 3.0, 6.0])
def test_floor_has_the_requested_slope_per_octave(tilt):
    noise = Floor.render(floor(tilt), channels=2, samples=4 * SR, sample_rate=SR)
    freqs, psd_db = welch_db(noise)
    band = (freqs >= 100) & (freqs <= 10_000)
    slope = np.polyfit(np.log2(freqs[band]), psd_db[band], 1)[0]
    assert slope == pytest.approx(tilt, abs=0.3)


@pytest.mark.parametrize("level", [-80.0, -60.0, -40.0])
def test_floor_hits_the_requested_level_on_every_channel(level):
    noise = Floor.render(floor(-3.0, level=level), channels=2, samples=SR, sample_rate=SR)
    for channel in noise:
        assert level_dbfs(channel) == pytest.approx(level, abs=0.01)
    assert abs(np.corrcoef(noise)[0, 1]) < 0.05  # each track its own hiss


def test_floor_bump_has_the_requested_height_and_the_absolute_density_matches():
    params = floor(0.0, bumps=((2000.0,), (12.0,), (0.5,)))
    noise = Floor.render(params, channels=2, samples=4 * SR, sample_rate=SR)
    freqs, psd_db = welch_db(noise)
    at = lambda hz: psd_db[np.argmin(np.abs(freqs - hz))]  # noqa: E731
    assert at(2000.0) - np.median(psd_db[(freqs > 100) & (freqs < 300)]) == pytest.approx(12.0, abs=1.5)
    band = (freqs > 200) & (freqs < 16_000)
    expected = Floor.density_dbfs_per_hz(params, freqs[band], sample_rate=SR)
    assert np.median(psd_db[band] - expected) == pytest.approx(0.0, abs=0.5)


def test_floor_params_are_checked():
    with pytest.raises(ValueError, match="differ in number"):
        floor(0.0, bumps=((1000.0,), (), ()))
    with pytest.raises(ValueError, match="positive"):
        floor(0.0, bumps=((1000.0,), (3.0,), (0.0,)))


def test_whine_line_sits_at_the_requested_frequency_and_level():
    params = lines([1234.5], [-60.0])
    noise = TonalLines.render(params, channels=2, samples=4 * SR, sample_rate=SR)
    freqs, psd_db = welch_db(noise, nperseg=SR)  # 1 Hz bins
    assert freqs[np.argmax(psd_db)] == pytest.approx(1234.5, abs=1.0)
    assert level_dbfs(noise[0]) == pytest.approx(-60.0, abs=0.05)
    np.testing.assert_array_equal(noise[0], noise[1])  # enters after the heads


@pytest.mark.parametrize("fundamental", [45.0, 47.3, 64.5])
def test_off_speed_hum_has_its_fundamental_and_harmonics_anywhere_in_45_to_65_hz(fundamental):
    drawn = OffSpeedHum.sample_params(np.random.default_rng(1), fundamental_hz=(fundamental, fundamental),
                                      level_dbfs=(-55.0, -55.0), drift_percent=(0.0, 0.0))
    assert 45.0 <= drawn.frequencies_hz[0] <= 65.0
    noise = TonalLines.render(drawn, channels=1, samples=4 * SR, sample_rate=SR)
    spectrum = np.abs(np.fft.rfft(noise[0] * np.hanning(noise.shape[1])))
    freqs = np.fft.rfftfreq(noise.shape[1], 1 / SR)
    for order, frequency in enumerate(drawn.frequencies_hz, 1):
        assert frequency == pytest.approx(order * fundamental)
        near = (freqs > frequency - 5) & (freqs < frequency + 5)
        assert freqs[near][np.argmax(spectrum[near])] == pytest.approx(frequency, abs=0.5)
    assert level_dbfs(noise) == pytest.approx(-55.0, abs=0.1)


def test_drift_moves_every_line_by_the_same_fraction_around_its_mean():
    params = lines([1000.0, 3000.0], [-50.0, -50.0], drift_percent=2.0, drift_hz=0.25)
    noise = TonalLines.render(params, channels=1, samples=8 * SR, sample_rate=SR)[0]
    frame = 8192
    freqs = np.fft.rfftfreq(frame, 1 / SR)
    for centre in (1000.0, 3000.0):
        near = (freqs > centre * 0.95) & (freqs < centre * 1.05)
        peaks = []
        for start in range(0, noise.size - frame, frame // 2):
            spectrum = np.abs(np.fft.rfft(noise[start:start + frame] * np.hanning(frame)))
            peaks.append(freqs[near][np.argmax(spectrum[near])])
        # One full drift cycle: the peak sweeps ±2 % around the line's frequency.
        assert min(peaks) == pytest.approx(centre * 0.98, rel=0.004)
        assert max(peaks) == pytest.approx(centre * 1.02, rel=0.004)


def test_whine_draws_lines_in_its_band():
    for seed in range(20):
        drawn = Whine.sample_params(np.random.default_rng(seed))
        assert 1 <= len(drawn.frequencies_hz) <= 2
        assert all(500.0 <= frequency <= 5000.0 for frequency in drawn.frequencies_hz)


def test_falling_tape_falls_and_its_lines_stand_above_the_floor():
    floor_params, line_params = sample_family(np.random.default_rng(0), "falling-tape")
    assert line_params.frequencies_hz == FALLING_TAPE_LINES_HZ
    noise = family_noise(np.zeros((2, 4 * SR), np.float32), SR, (floor_params, line_params))
    freqs, psd_db = welch_db(noise, nperseg=2048)  # bins of LINE_BANDWIDTH_HZ
    assert freqs[1] == pytest.approx(LINE_BANDWIDTH_HZ)
    band = (freqs >= 1000) & (freqs <= 5000)
    peak = max(psd_db[np.argmin(np.abs(freqs - hz))] for hz in FALLING_TAPE_LINES_HZ)
    # Hann leakage spreads a line over about 1.5 bins.
    assert peak - np.median(psd_db[band]) == pytest.approx(FALLING_TAPE_LINE_HEIGHT_DB, abs=2.5)
    assert np.mean(psd_db[(freqs > 100) & (freqs < 300)]) - np.mean(psd_db[freqs > 8000]) > 20.0


def test_unknown_family_and_foreign_params_are_errors():
    with pytest.raises(ValueError, match="unknown noise family 'tape'"):
        sample_family(np.random.default_rng(0), "tape")
    with pytest.raises(ValueError, match="not a noise family member"):
        family_noise(np.zeros((1, 100), np.float32), SR, ("hiss",))
