"""The whole cassette: per-effect params in one record, presets to draw them from, and the simulation.

A simulation returns two sample-aligned signals of the input's shape:

* ``target``: the clean music through the tape's signal path (Dolby B errors, saturation, dropouts,
  azimuth, high-frequency roll-off, speed/wow/flutter): what a denoiser should output;
* ``noisy``: ``target`` plus the additive noises (hiss, modulation noise, hum, rumble, print-through,
  clicks): what it gets as input.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from cassette_denoise.simulate.noise import (
    Clicks,
    ClicksParams,
    Hiss,
    HissParams,
    Hum,
    HumParams,
    ModulationNoise,
    ModulationNoiseParams,
    ModulationSidebands,
    ModulationSidebandsParams,
    PrintThrough,
    PrintThroughParams,
    Rumble,
    RumbleParams,
)
from cassette_denoise.simulate.signal_path import (
    Azimuth,
    AzimuthParams,
    DolbyB,
    DolbyBParams,
    Dropouts,
    DropoutsParams,
    RollOff,
    RollOffParams,
    Saturation,
    SaturationParams,
    Speed,
    SpeedParams,
)

# Applied in this order: the Dolby B encoder acts before the tape, saturation and dropouts on it,
# azimuth and roll-off in the playback head, and the transport's speed on everything recorded.
SIGNAL_PATH = {
    "dolby_b": DolbyB, "saturation": Saturation, "dropouts": Dropouts,
    "azimuth": Azimuth, "rolloff": RollOff, "speed": Speed,
}
NOISES = {
    "hiss": Hiss, "modulation_noise": ModulationNoise, "hum": Hum,
    "rumble": Rumble, "print_through": PrintThrough, "clicks": Clicks,
    "modulation_sidebands": ModulationSidebands,
}


@dataclass(frozen=True)
class CassetteParams:
    """Everything one simulated tape does; ``None`` switches an effect off."""

    dolby_b: DolbyBParams | None = None
    saturation: SaturationParams | None = None
    dropouts: DropoutsParams | None = None
    azimuth: AzimuthParams | None = None
    rolloff: RollOffParams | None = None
    speed: SpeedParams | None = None
    hiss: HissParams | None = None
    modulation_noise: ModulationNoiseParams | None = None
    hum: HumParams | None = None
    rumble: RumbleParams | None = None
    print_through: PrintThroughParams | None = None
    clicks: ClicksParams | None = None
    modulation_sidebands: ModulationSidebandsParams | None = None


@dataclass(frozen=True)
class Simulation:
    """``noisy`` and ``target``: float32, the shape of the clean input, sample-aligned."""

    noisy: np.ndarray
    target: np.ndarray
    params: CassetteParams


@dataclass(frozen=True)
class Preset:
    """How to draw :class:`CassetteParams`: for each effect, the probability that it is on and the
    options for its ``sample_params`` (narrow ranges give a fixed character with a little jitter).
    Effects not listed are off."""

    description: str
    effects: Mapping[str, tuple[float, Mapping[str, Any]]]


_RANDOM = {
    "dolby_b": (0.2, {}), "saturation": (0.3, {}), "dropouts": (0.3, {}),
    "azimuth": (0.5, {}), "rolloff": (0.7, {}), "speed": (0.7, {}),
    "hiss": (1.0, {"dolby_b_probability": 0.2}), "modulation_noise": (0.7, {}), "hum": (0.5, {}),
    "rumble": (0.5, {}), "print_through": (0.3, {}), "clicks": (0.3, {}),
}

PRESETS: Mapping[str, Preset] = types.MappingProxyType({
    "random": Preset("every effect over the documented ranges, each switched on at random", _RANDOM),
    "training": Preset(
        "'random' with the hiss level half the time relative to the music (SNR 0-35 dB) and the "
        "signal-path effects rarer (p = 0.3): the denoiser only has to remove additive noise",
        {
            **_RANDOM,
            **{name: (0.3, {}) for name in SIGNAL_PATH},
            "hiss": (1.0, {"dolby_b_probability": 0.2, "snr_probability": 0.5}),
        },
    ),
    "good-deck-type-ii": Preset("a well-aligned home deck, Type II (70 us) tape, Dolby B", {
        "azimuth": (1.0, {"delay_us": (0.0, 30.0), "hf_loss_hz": (14_000.0, 16_000.0)}),
        "rolloff": (1.0, {"corner_hz": (15_500.0, 16_500.0)}),
        "speed": (1.0, {"offset_percent": (-0.3, 0.3), "wow_flutter_percent": (0.02, 0.05)}),
        "hiss": (1.0, {"level_dbfs": (-69.0, -65.0), "turnover_hz": (2200.0, 2300.0), "shelf_db": (7.0, 9.0),
                       "lowpass_hz": (16_000.0, 18_000.0), "dolby_b_probability": 1.0}),
        "modulation_noise": (1.0, {"rise_db": (2.0, 5.0)}),
        "hum": (1.0, {"level_dbfs": (-80.0, -76.0)}),
        "rumble": (1.0, {"level_dbfs": (-80.0, -76.0), "corner_hz": (20.0, 40.0)}),
        "print_through": (1.0, {"echo_db": (-60.0, -56.0)}),
    }),
    "walkman-ferric": Preset("a portable player (battery: no hum), Type I (120 us) tape, no noise reduction", {
        "saturation": (1.0, {"ceiling_dbfs": (-3.0, 0.0)}),
        "azimuth": (1.0, {"delay_us": (100.0, 250.0), "hf_loss_hz": (8000.0, 11_000.0)}),
        "rolloff": (1.0, {"corner_hz": (9000.0, 11_000.0)}),
        "speed": (1.0, {"offset_percent": (-2.0, 2.0), "wow_flutter_percent": (0.1, 0.3), "flutter_hz": (4.0, 20.0)}),
        "hiss": (1.0, {"level_dbfs": (-58.0, -52.0), "turnover_hz": (1300.0, 1360.0), "shelf_db": (9.0, 11.0),
                       "lowpass_hz": (10_000.0, 12_000.0)}),
        "modulation_noise": (1.0, {"rise_db": (6.0, 10.0)}),
        "rumble": (1.0, {"level_dbfs": (-66.0, -60.0), "corner_hz": (40.0, 90.0)}),
        "print_through": (1.0, {"echo_db": (-52.0, -46.0)}),
    }),
    "worn-tape": Preset("an old, much-played Type I tape on a tired deck", {
        "saturation": (1.0, {"ceiling_dbfs": (-6.0, -3.0)}),
        "dropouts": (1.0, {"count": (2, 4), "depth_db": (12.0, 30.0), "one_channel_probability": 0.5}),
        "azimuth": (1.0, {"delay_us": (250.0, 400.0), "hf_loss_hz": (6000.0, 8000.0)}),
        "rolloff": (1.0, {"corner_hz": (6000.0, 8000.0)}),
        "speed": (1.0, {"offset_percent": (-1.5, 1.5), "wow_flutter_percent": (0.2, 0.3)}),
        "hiss": (1.0, {"level_dbfs": (-46.0, -42.0), "turnover_hz": (1300.0, 1360.0), "shelf_db": (10.0, 12.0),
                       "lowpass_hz": (10_000.0, 11_000.0)}),
        "modulation_noise": (1.0, {"rise_db": (10.0, 15.0)}),
        "hum": (1.0, {"mains_hz": (50.0,), "level_dbfs": (-58.0, -52.0), "odd_harmonics_db": (3.0, 10.0)}),
        "rumble": (1.0, {"level_dbfs": (-62.0, -56.0)}),
        "print_through": (1.0, {"echo_db": (-45.0, -40.0)}),
        "clicks": (1.0, {"rate_per_s": (0.5, 2.0)}),
    }),
    "dolby-b-undecoded": Preset("a good Type II tape recorded with Dolby B, played back without it", {
        "dolby_b": (1.0, {"undecoded_probability": 1.0}),
        "azimuth": (1.0, {"delay_us": (0.0, 60.0), "hf_loss_hz": (13_000.0, 16_000.0)}),
        "rolloff": (1.0, {"corner_hz": (14_000.0, 16_000.0)}),
        "speed": (1.0, {"offset_percent": (-0.5, 0.5), "wow_flutter_percent": (0.03, 0.08)}),
        "hiss": (1.0, {"level_dbfs": (-64.0, -60.0), "turnover_hz": (2200.0, 2300.0), "shelf_db": (7.0, 9.0),
                       "lowpass_hz": (15_000.0, 17_000.0)}),
        "modulation_noise": (1.0, {"rise_db": (3.0, 6.0)}),
        "hum": (1.0, {"level_dbfs": (-80.0, -74.0)}),
        "rumble": (1.0, {"level_dbfs": (-80.0, -72.0)}),
    }),
})


def sample_cassette(rng: np.random.Generator, preset: str = "random") -> CassetteParams:
    """Draw the params of one tape from a preset (see ``PRESETS``)."""
    try:
        spec = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None
    drawn = {}
    for name, effect in {**SIGNAL_PATH, **NOISES}.items():  # a fixed order keeps the draws reproducible
        if name in spec.effects:
            probability, options = spec.effects[name]
            if rng.random() < probability:
                drawn[name] = effect.sample_params(rng, **options)
    hiss, modulation = drawn.get("hiss"), drawn.get("modulation_noise")
    if hiss is not None and modulation is not None and hiss.level_reference == "dbfs":
        # Modulation noise rises from the tape's own noise floor.
        drawn["modulation_noise"] = dataclasses.replace(modulation, floor_dbfs=hiss.level_db)
    return CassetteParams(**drawn)


def apply_cassette(clean: np.ndarray, sample_rate: int, params: CassetteParams) -> Simulation:
    """Play ``clean`` (float ``(channels, samples)`` or ``(samples,)``) from the tape ``params`` describes.

    Deterministic: the noises come from seeds stored in ``params``.
    """
    x = np.asarray(clean, dtype=np.float32)
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise ValueError(f"expected audio shaped (channels, samples) or (samples,), got {x.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    target = np.array(np.atleast_2d(x))  # a copy: the caller's array is never aliased
    for name, effect in SIGNAL_PATH.items():
        if (effect_params := getattr(params, name)) is not None:
            target = effect.apply(target, sample_rate, effect_params)
    noisy = target.copy()
    for name, effect in NOISES.items():
        if (effect_params := getattr(params, name)) is not None:
            noisy += effect.noise(target, sample_rate, effect_params)
    return Simulation(noisy=noisy.reshape(x.shape), target=target.reshape(x.shape), params=params)


def simulate(clean: np.ndarray, sample_rate: int, *, rng: np.random.Generator, preset: str = "random") -> Simulation:
    """:func:`sample_cassette` then :func:`apply_cassette`."""
    return apply_cassette(clean, sample_rate, sample_cassette(rng, preset))


def params_to_json(params: CassetteParams) -> dict:
    """Plain JSON-ready dict (effects switched off are ``None``)."""
    return _to_json(params)


def params_from_json(data: Mapping[str, Any]) -> CassetteParams:
    """Inverse of :func:`params_to_json`; missing or unknown keys and wrong types are a ``ValueError``."""
    return _from_json(CassetteParams, data, "params")


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {field.name: _to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_json(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _from_json(inner, value, where)
    if dataclasses.is_dataclass(hint):
        names = [field.name for field in dataclasses.fields(hint)]
        if not isinstance(value, Mapping) or set(value) != set(names):
            keys = sorted(value) if isinstance(value, Mapping) else value
            raise ValueError(f"{where}: expected an object with keys {names}, got {keys!r}")
        hints = typing.get_type_hints(hint)
        return hint(**{name: _from_json(hints[name], value[name], f"{where}.{name}") for name in names})
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        items = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(value) != len(items):
            raise ValueError(f"{where}: expected a list of {len(items)}, got {value!r}")
        return tuple(_from_json(item, element, f"{where}[{i}]") for i, (item, element) in enumerate(zip(items, value)))
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}")
