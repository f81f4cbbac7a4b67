"""Noise families: the many colours and kinds of noise real tapes carry, beyond one deck's hiss.

Real transfers differ widely (``../shared/docs/real-noise.md``): one tape's floor rises towards
16 kHz, another's falls by about 5 dB per octave and carries whine lines near 1.2 and 1.5 kHz, and a
deck played off speed moves its hum away from 50/60 Hz. A model that should work on any of them
trains over a broad family and is measured on members it never saw
(``benchmarks/generalisation.py``). The members:

* :class:`Floor`: stationary noise with a smooth spectrum, a tilt of ``tilt_db_per_octave`` (white 0,
  pink −3, brown −6) plus broad bumps and dips;
* :class:`OffSpeedHum`: a hum fundamental anywhere in 45–65 Hz with harmonics, all drifting together
  as the tape speed wanders;
* :class:`Whine`: one or two tonal lines at 0.5–5 kHz;
* rumble below 100 Hz and modulation noise: the simulator's own :class:`~cassette_denoise.simulate.noise.Rumble`
  and :class:`~cassette_denoise.simulate.noise.ModulationNoise`.

Each follows the simulator's style: ``sample_params(rng, ...) -> params`` with ``(low, high)`` range
options, and a deterministic ``noise(x, sample_rate, params) -> (channels, samples)`` (``apply`` adds it).
The stationary ones also ``render(params, *, channels, samples, sample_rate)`` without a signal.
:data:`FAMILIES` names the combinations the benchmark holds out and training draws from:

    rng = np.random.default_rng(0)
    params = sample_family(rng, "falling-tape")          # tuple of params, logged with the example
    noise = family_noise(clean, 44_100, params)          # (channels, samples) float32
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from cassette_denoise.simulate._dsp import Range, db_to_gain, draw_seed, log_uniform, shaped_noise
from cassette_denoise.simulate.noise import (
    AdditiveNoise,
    ModulationNoise,
    ModulationNoiseParams,
    Rumble,
    RumbleParams,
)

#: Tilts pivot here: a floor's spectral density at 1 kHz does not depend on its tilt.
PIVOT_HZ = 1000.0
#: Below this the floor's density is held flat, so a falling (brown) floor does not run off to
#: infinity at DC; rumble below it is the :class:`Rumble` member's job.
LOWEST_HZ = 20.0
#: Resolution bandwidth in which :data:`FAMILIES`' whine lines are set against the floor: one bin of
#: the metrics module's 2048-point STFT at 44.1 kHz, where they then show as a peak of the stated height.
LINE_BANDWIDTH_HZ = 44_100 / 2048


class StationaryNoise(AdditiveNoise):
    """Noise that does not depend on the signal: ``noise`` only reads its shape."""

    @classmethod
    def noise(cls, x: np.ndarray, sample_rate: int, params) -> np.ndarray:
        channels, samples = np.atleast_2d(x).shape
        return cls.render(params, channels=channels, samples=samples, sample_rate=sample_rate)

    @staticmethod
    def render(params, *, channels: int, samples: int, sample_rate: int) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class FloorParams:
    """Stationary noise whose spectral density, in dB, is a straight line over log frequency through
    :data:`PIVOT_HZ` (``tilt_db_per_octave``; held flat below :data:`LOWEST_HZ`) plus Gaussian bumps
    in log frequency (``bump_gains_db`` at ``bump_centres_hz``, standard deviation ``bump_widths_octaves``).
    ``level_dbfs`` is the RMS of each channel; channels are independent, as each track has its own hiss."""

    level_dbfs: float
    tilt_db_per_octave: float
    bump_centres_hz: tuple[float, ...]
    bump_gains_db: tuple[float, ...]
    bump_widths_octaves: tuple[float, ...]
    seed: int

    def __post_init__(self):
        counts = {len(self.bump_centres_hz), len(self.bump_gains_db), len(self.bump_widths_octaves)}
        if len(counts) != 1:
            raise ValueError(f"bump centres, gains and widths differ in number: {self.bump_centres_hz}, "
                             f"{self.bump_gains_db}, {self.bump_widths_octaves}")
        if any(width <= 0 for width in self.bump_widths_octaves):
            raise ValueError(f"bump widths must be positive, got {self.bump_widths_octaves}")


class Floor(StationaryNoise):
    @staticmethod
    def sample_params(
        rng: np.random.Generator,
        *,
        level_dbfs: Range = (-80.0, -40.0),
        tilt_db_per_octave: Range = (-6.0, 6.0),
        bumps: tuple[int, int] = (0, 3),
        bump_gain_db: Range = (-15.0, 15.0),
        bump_centre_hz: Range = (50.0, 16_000.0),
        bump_width_octaves: Range = (0.3, 1.5),
    ) -> FloorParams:
        count = int(rng.integers(bumps[0], bumps[1] + 1))
        return FloorParams(
            level_dbfs=rng.uniform(*level_dbfs),
            tilt_db_per_octave=rng.uniform(*tilt_db_per_octave),
            bump_centres_hz=tuple(log_uniform(rng, *bump_centre_hz) for _ in range(count)),
            bump_gains_db=tuple(rng.uniform(*bump_gain_db, count).tolist()),
            bump_widths_octaves=tuple(rng.uniform(*bump_width_octaves, count).tolist()),
            seed=draw_seed(rng),
        )

    @staticmethod
    def density_db(params: FloorParams, freqs_hz: np.ndarray) -> np.ndarray:
        """The floor's spectral shape in dB at ``freqs_hz`` (relative: 0 dB at :data:`PIVOT_HZ` without bumps)."""
        octaves = np.log2(np.maximum(np.asarray(freqs_hz, np.float64), LOWEST_HZ) / PIVOT_HZ)
        shape = params.tilt_db_per_octave * octaves
        for centre, gain, width in zip(params.bump_centres_hz, params.bump_gains_db, params.bump_widths_octaves):
            shape = shape + gain * np.exp(-0.5 * ((octaves - np.log2(centre / PIVOT_HZ)) / width) ** 2)
        return shape

    @staticmethod
    def density_dbfs_per_hz(params: FloorParams, freqs_hz: np.ndarray, *, sample_rate: int) -> np.ndarray:
        """Absolute one-sided power spectral density (dB re full scale² per Hz) at ``freqs_hz``.

        The shape of :meth:`density_db` scaled so that it integrates to ``level_dbfs`` over 0 …
        ``sample_rate / 2``; for setting other noises against the floor.
        """
        grid = np.linspace(0.0, sample_rate / 2, 1 << 16)
        grid_power = db_to_gain(Floor.density_db(params, grid)) ** 2
        grid_power[0] = 0.0  # rendered noise has no DC
        total = np.sum(grid_power) * (grid[1] - grid[0])
        # The one-sided density integrates to the mean square, whose dB value is level_dbfs.
        return Floor.density_db(params, freqs_hz) + params.level_dbfs - 10 * np.log10(total)

    @staticmethod
    def render(params: FloorParams, *, channels: int, samples: int, sample_rate: int) -> np.ndarray:
        noise = shaped_noise(np.random.default_rng(params.seed), channels, samples, sample_rate,
                             lambda f: db_to_gain(Floor.density_db(params, f)))
        return noise * np.float32(db_to_gain(params.level_dbfs))


@dataclass(frozen=True)
class TonalLinesParams:
    """Sine lines at ``frequencies_hz`` (their mean frequencies), each ``levels_dbfs`` RMS, all moved
    together by a slow speed drift: every line's frequency is multiplied by
    ``1 + drift_percent / 100 * sin(2π drift_hz t + drift_phase_rad)``, as when the tape's speed
    wanders. The same on every channel: hum and whine enter after the heads."""

    frequencies_hz: tuple[float, ...]
    levels_dbfs: tuple[float, ...]
    phases_rad: tuple[float, ...]
    drift_percent: float
    drift_hz: float
    drift_phase_rad: float

    def __post_init__(self):
        if not len(self.frequencies_hz) == len(self.levels_dbfs) == len(self.phases_rad):
            raise ValueError(f"{len(self.frequencies_hz)} line frequencies, {len(self.levels_dbfs)} levels and "
                             f"{len(self.phases_rad)} phases")
        if any(frequency <= 0 for frequency in self.frequencies_hz):
            raise ValueError(f"line frequencies must be positive, got {self.frequencies_hz}")
        if self.drift_hz <= 0 or not 0 <= self.drift_percent < 100:
            raise ValueError(f"drift must have drift_hz > 0 and 0 <= drift_percent < 100, got "
                             f"{self.drift_hz} Hz and {self.drift_percent} %")


class TonalLines(StationaryNoise):
    """Renders :class:`TonalLinesParams`; :class:`OffSpeedHum` and :class:`Whine` draw them."""

    @staticmethod
    def render(params: TonalLinesParams, *, channels: int, samples: int, sample_rate: int) -> np.ndarray:
        seconds = np.arange(samples, dtype=np.float64) / sample_rate
        omega = 2 * np.pi * params.drift_hz
        # Elapsed tape time: the integral of the speed 1 + d·sin(ωt + φ), so each line's phase is
        # its frequency times this, and the drift never makes the phase jump.
        drift = params.drift_percent / 100
        tape_s = seconds - drift / omega * (np.cos(omega * seconds + params.drift_phase_rad)
                                            - np.cos(params.drift_phase_rad))
        lines = np.zeros(samples, np.float64)
        for frequency, level, phase in zip(params.frequencies_hz, params.levels_dbfs, params.phases_rad):
            if frequency * (1 + drift) >= sample_rate / 2:
                continue  # above Nyquist at some point of the drift: it could only alias
            cycles = frequency * tape_s
            # Reduced to one cycle in float64: float32 time would drift on long files.
            lines += np.sqrt(2) * db_to_gain(level) * np.sin(2 * np.pi * (cycles - np.floor(cycles)) + phase)
        return np.tile(lines.astype(np.float32), (channels, 1))


class OffSpeedHum(TonalLines):
    """Mains hum off speed: a fundamental anywhere in ``fundamental_hz`` (a deck 4 % slow puts 50 Hz
    at 48 Hz), harmonics up to ``harmonics`` with the odd ones often the strongest, and a slow drift."""

    @staticmethod
    def sample_params(
        rng: np.random.Generator,
        *,
        fundamental_hz: Range = (45.0, 65.0),
        level_dbfs: Range = (-80.0, -50.0),
        harmonics: int = 5,
        odd_harmonics_db: Range = (-6.0, 10.0),
        even_harmonics_db: Range = (-20.0, -3.0),
        drift_percent: Range = (0.0, 1.0),
        drift_hz: Range = (0.05, 0.5),
    ) -> TonalLinesParams:
        fundamental = rng.uniform(*fundamental_hz)
        relative_db = np.array([0.0] + [rng.uniform(*(odd_harmonics_db if k % 2 else even_harmonics_db))
                                        for k in range(2, harmonics + 1)])
        # level_dbfs is the RMS of the sum: the lines' powers add.
        total_db = 10 * np.log10(np.sum(10 ** (relative_db / 10)))
        return TonalLinesParams(
            frequencies_hz=tuple(fundamental * k for k in range(1, harmonics + 1)),
            levels_dbfs=tuple((relative_db + rng.uniform(*level_dbfs) - total_db).tolist()),
            phases_rad=tuple(rng.uniform(0.0, 2 * np.pi, harmonics).tolist()),
            drift_percent=rng.uniform(*drift_percent),
            drift_hz=log_uniform(rng, *drift_hz),
            drift_phase_rad=rng.uniform(0.0, 2 * np.pi),
        )


class Whine(TonalLines):
    """``lines`` unrelated tonal lines in ``frequency_hz`` (a capstan motor, a bias or pilot-tone beat)."""

    @staticmethod
    def sample_params(
        rng: np.random.Generator,
        *,
        lines: tuple[int, int] = (1, 2),
        frequency_hz: Range = (500.0, 5000.0),
        level_dbfs: Range = (-80.0, -50.0),
        drift_percent: Range = (0.0, 0.5),
        drift_hz: Range = (0.05, 0.5),
    ) -> TonalLinesParams:
        count = int(rng.integers(lines[0], lines[1] + 1))
        return TonalLinesParams(
            frequencies_hz=tuple(log_uniform(rng, *frequency_hz) for _ in range(count)),
            levels_dbfs=tuple(rng.uniform(*level_dbfs, count).tolist()),
            phases_rad=tuple(rng.uniform(0.0, 2 * np.pi, count).tolist()),
            drift_percent=rng.uniform(*drift_percent),
            drift_hz=log_uniform(rng, *drift_hz),
            drift_phase_rad=rng.uniform(0.0, 2 * np.pi),
        )


NoiseParams = FloorParams | TonalLinesParams | RumbleParams | ModulationNoiseParams
#: Which class renders each kind of params.
EFFECTS: Mapping[type, type[AdditiveNoise]] = types.MappingProxyType({
    FloorParams: Floor, TonalLinesParams: TonalLines, RumbleParams: Rumble, ModulationNoiseParams: ModulationNoise,
})

#: The measured falling tape (``../shared/docs/real-noise.md``): its density falls from −74 dB/Hz at
#: 63 Hz to −116 at 16 kHz, a least-squares slope of −4.9 dB per octave, and two whine lines stand
#: 22 dB above its median 1–5 kHz level.
FALLING_TAPE_TILT_DB_PER_OCTAVE = -5.0
FALLING_TAPE_LINES_HZ = (1170.0, 1480.0)
FALLING_TAPE_LINE_HEIGHT_DB = 22.0
#: Families are drawn for this rate: it fixes how a floor's level spreads over frequency, and so
#: the level of lines set against it.
FAMILY_SAMPLE_RATE = 44_100


@dataclass(frozen=True)
class Family:
    """A named way to draw noise: ``sample(rng)`` returns the params of each member noise."""

    description: str
    sample: Callable[[np.random.Generator], tuple[NoiseParams, ...]]


def _fixed_floor(tilt_db_per_octave: float) -> Callable[[np.random.Generator], tuple[NoiseParams, ...]]:
    def sample(rng: np.random.Generator) -> tuple[NoiseParams, ...]:
        return (Floor.sample_params(rng, tilt_db_per_octave=(tilt_db_per_octave,) * 2, bumps=(0, 0)),)
    return sample


def _falling_tape(rng: np.random.Generator) -> tuple[NoiseParams, ...]:
    floor = Floor.sample_params(rng, tilt_db_per_octave=(FALLING_TAPE_TILT_DB_PER_OCTAVE,) * 2, bumps=(0, 0))
    # The median over the bins of a linear-frequency spectrum, as the measurement took it.
    band = np.linspace(1000.0, 5000.0, 512)
    median_db = float(np.median(Floor.density_dbfs_per_hz(floor, band, sample_rate=FAMILY_SAMPLE_RATE)))
    line_db = median_db + 10 * np.log10(LINE_BANDWIDTH_HZ) + FALLING_TAPE_LINE_HEIGHT_DB
    lines = TonalLinesParams(
        frequencies_hz=FALLING_TAPE_LINES_HZ,
        levels_dbfs=(line_db,) * len(FALLING_TAPE_LINES_HZ),
        phases_rad=tuple(rng.uniform(0.0, 2 * np.pi, len(FALLING_TAPE_LINES_HZ)).tolist()),
        drift_percent=rng.uniform(0.0, 0.2),
        drift_hz=log_uniform(rng, 0.05, 0.5),
        drift_phase_rad=rng.uniform(0.0, 2 * np.pi),
    )
    return floor, lines


def _random_floor(rng: np.random.Generator) -> tuple[NoiseParams, ...]:
    return (Floor.sample_params(rng),)


def _modulated_floor(rng: np.random.Generator) -> tuple[NoiseParams, ...]:
    floor = Floor.sample_params(rng, tilt_db_per_octave=(-3.0, 3.0), bumps=(0, 1))
    # Modulation noise rises from the tape's own floor.
    return floor, ModulationNoise.sample_params(rng, rise_db=(6.0, 15.0), floor_dbfs=(floor.level_dbfs,) * 2)


def _broad(rng: np.random.Generator) -> tuple[NoiseParams, ...]:
    """A random floor, and each of hum, whine, rumble and modulation noise half the time."""
    members: list[NoiseParams] = [Floor.sample_params(rng)]
    for draw in (OffSpeedHum.sample_params, Whine.sample_params, Rumble.sample_params):
        if rng.random() < 0.5:
            members.append(draw(rng))
    if rng.random() < 0.5:
        members.append(ModulationNoise.sample_params(rng, floor_dbfs=(members[0].level_dbfs,) * 2))
    return tuple(members)


FAMILIES: Mapping[str, Family] = types.MappingProxyType({
    "white": Family("flat floor (0 dB/octave)", _fixed_floor(0.0)),
    "pink": Family("pink floor (-3 dB/octave)", _fixed_floor(-3.0)),
    "brown": Family("brown floor (-6 dB/octave)", _fixed_floor(-6.0)),
    "falling-tape": Family(
        f"like the measured falling tape: {FALLING_TAPE_TILT_DB_PER_OCTAVE:g} dB/octave floor, whine lines at "
        f"{' and '.join(f'{f / 1000:g}' for f in FALLING_TAPE_LINES_HZ)} kHz {FALLING_TAPE_LINE_HEIGHT_DB:g} dB "
        "above its median 1-5 kHz level", _falling_tape),
    "random-floor": Family("smooth random floor: tilt -6...+6 dB/octave, 0-3 bumps of ±15 dB", _random_floor),
    "hum": Family("off-speed hum: 45-65 Hz fundamental, 5 harmonics, slow drift",
                  lambda rng: (OffSpeedHum.sample_params(rng),)),
    "whine": Family("1-2 whine lines at 0.5-5 kHz, slow drift", lambda rng: (Whine.sample_params(rng),)),
    "rumble": Family("rumble below a 20-100 Hz corner", lambda rng: (Rumble.sample_params(rng),)),
    "modulation": Family("a floor with modulation noise rising 6-15 dB from it with the music",
                         _modulated_floor),
    "broad": Family("a random floor, and each of hum, whine, rumble and modulation noise half the time", _broad),
})


def sample_family(rng: np.random.Generator, name: str) -> tuple[NoiseParams, ...]:
    """Draw the params of one noise from the family ``name`` (see :data:`FAMILIES`)."""
    try:
        family = FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown noise family {name!r}; choose one of {', '.join(FAMILIES)}") from None
    return family.sample(rng)


def family_noise(x: np.ndarray, sample_rate: int, params: tuple[NoiseParams, ...]) -> np.ndarray:
    """The sum of each member's noise for the signal ``x`` (``(channels, samples)``), float32, ``x``'s shape.

    Deterministic: every waveform comes from the params. Only modulation noise reads ``x`` itself.
    """
    x = np.atleast_2d(np.asarray(x, np.float32))
    total = np.zeros_like(x)
    for member in params:
        try:
            effect = EFFECTS[type(member)]
        except KeyError:
            raise ValueError(f"not a noise family member: {member!r}") from None
        total += effect.noise(x, sample_rate, member)
    return total


def family_params_to_json(params: tuple[NoiseParams, ...]) -> list[dict[str, Any]]:
    """Plain JSON-ready records, ``{"effect": class name, **fields}`` per member, for logging with an example."""
    return [{"effect": EFFECTS[type(member)].__name__, **dataclasses.asdict(member)} for member in params]
