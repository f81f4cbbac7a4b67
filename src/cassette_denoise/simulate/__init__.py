"""Compact-cassette playback model: make clean music sound like a digitised tape.

    rng = np.random.default_rng(0)
    params = sample_cassette(rng, preset="training")       # CassetteParams, logged with the example
    result = apply_cassette(clean, 44_100, params)         # Simulation(noisy, target, params)

``target`` is the clean music through the tape's signal path, ``noisy`` is ``target`` plus the additive
noises; see :mod:`cassette_denoise.simulate.cassette`. Each degradation lives in
:mod:`~cassette_denoise.simulate.signal_path` or :mod:`~cassette_denoise.simulate.noise` with its own
``sample_params`` and ``apply``.
"""

from cassette_denoise.simulate.cassette import (
    NOISES,
    PRESETS,
    SIGNAL_PATH,
    CassetteParams,
    Preset,
    Simulation,
    apply_cassette,
    params_from_json,
    params_to_json,
    sample_cassette,
    simulate,
)
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
    DropoutEvent,
    Dropouts,
    DropoutsParams,
    RollOff,
    RollOffParams,
    Saturation,
    SaturationParams,
    Speed,
    SpeedParams,
)

__all__ = [
    "NOISES", "PRESETS", "SIGNAL_PATH", "CassetteParams", "Preset", "Simulation",
    "apply_cassette", "params_from_json", "params_to_json", "sample_cassette", "simulate",
    "Clicks", "ClicksParams", "Hiss", "HissParams", "Hum", "HumParams", "ModulationNoise",
    "ModulationNoiseParams", "ModulationSidebands", "ModulationSidebandsParams",
    "PrintThrough", "PrintThroughParams", "Rumble", "RumbleParams",
    "Azimuth", "AzimuthParams", "DolbyB", "DolbyBParams", "DropoutEvent", "Dropouts", "DropoutsParams",
    "RollOff", "RollOffParams", "Saturation", "SaturationParams", "Speed", "SpeedParams",
]
