"""Property-based fuzz targets for the Python API and the audio reader (run by test_fuzz.py in a child
process under a memory cap, so that a blow-up fails the test instead of the machine).

Each target is a hypothesis test: called, it runs its examples and raises on the first one that
breaks its property. ``python fuzz_targets.py`` runs them all and prints how many examples ran, as JSON.
"""

from __future__ import annotations

import io
import json

import numpy as np
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cassette_denoise.audio import AudioError, read_audio
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.model import UNet, UNetConfig
from cassette_denoise.validate import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

API_EXAMPLES = 700
READER_EXAMPLES = 500
COUNTS = {"api": 0, "api denoised": 0, "reader": 0, "reader read": 0}
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))

torch.manual_seed(0)
torch.set_num_threads(1)
DENOISER = Denoiser(UNet(UNetConfig(base_width=2, levels=2)), device="cpu")

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint16, np.bool_,
          np.complex64]
# Values that break naive code: NaN, infinities, huge finite floats, subnormals, full scale.
SPECIAL = [np.nan, np.inf, -np.inf, 3e38, -1e37, 1e300, 1e-40, 1.0, -1.0, 0.0, 1000.0, 1000.5]
RATES = st.one_of(
    st.sampled_from([MIN_SAMPLE_RATE, 11025, 22050, 44100, 48000, 96000, MAX_SAMPLE_RATE]),
    st.integers(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE),
    st.integers(-10, 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, "44100", True, 44100.0, np.int32(48000), np.float64(7999.5)]),
)


@st.composite
def plausible_arrays(draw):
    """What a user is likely to pass: 1-8 channels of float or PCM, mostly finite, either layout."""
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64, np.int16, np.int32, np.uint8])))
    channels, samples = draw(st.integers(1, MAX_CHANNELS)), draw(st.integers(1, 3000))
    shape = draw(st.sampled_from([(channels, samples), (samples,), (samples, channels)]))
    if dtype.kind == "f":
        elements = st.one_of(st.floats(-1.5, 1.5), st.floats(-1000, 1000), st.sampled_from(SPECIAL))
        values = draw(hnp.arrays(np.float64, shape, elements=elements, fill=st.floats(-1, 1)))
        with np.errstate(all="ignore"):
            return values.astype(dtype)
    return draw(hnp.arrays(dtype, shape))


@st.composite
def wild_arrays(draw):
    """Anything array-shaped: any dtype, 0-3 dimensions, 0-10 channels, special values everywhere."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    ndim = draw(st.integers(0, 3))
    dims = st.integers(0, MAX_CHANNELS + 2)
    shape = [draw(dims) for _ in range(ndim - 1)] + ([draw(st.integers(0, 3000))] if ndim else [])
    if draw(st.booleans()):
        shape = shape[::-1]
    if dtype.kind in "fc":
        elements = st.one_of(st.floats(-1.5, 1.5), st.sampled_from(SPECIAL))
        values = draw(hnp.arrays(np.float64, shape, elements=elements, fill=st.sampled_from([0.0, 0.25, *SPECIAL])))
        with np.errstate(all="ignore"):
            return values.astype(dtype)
    return draw(hnp.arrays(dtype, shape))


@settings(max_examples=API_EXAMPLES, **SETTINGS)
@given(audio=st.one_of(plausible_arrays(), wild_arrays()), sample_rate=RATES,
       strength_db=st.one_of(st.just(30.0), st.floats(0, 120), st.floats(allow_nan=True)))
def fuzz_denoise(audio, sample_rate, strength_db):
    """Denoiser.denoise: a finite float32 array of the input's shape, or TypeError/ValueError; the input kept."""
    COUNTS["api"] += 1
    before = audio.copy()
    try:
        with np.errstate(all="ignore"):
            out = DENOISER.denoise(audio, sample_rate, strength_db=strength_db)
    except (TypeError, ValueError) as error:
        assert str(error), "an error without a message"
        return
    finally:
        np.testing.assert_array_equal(audio, before)
    assert out.dtype == np.float32 and out.shape == audio.shape
    assert np.isfinite(out).all()
    COUNTS["api denoised"] += 1


FORMATS = [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_24"), ("AIFF", "PCM_16"), ("AU", "PCM_16"),
           ("W64", "PCM_32"), ("CAF", "PCM_16"), ("OGG", "VORBIS"), ("WAV", "ULAW")]


@st.composite
def damaged_files(draw):
    fmt, subtype = draw(st.sampled_from(FORMATS))
    channels = draw(st.integers(1, 3))
    frames = draw(st.integers(1, 2000))
    rate = draw(st.sampled_from([8000, 44100, 96000]))
    audio = np.random.default_rng(draw(st.integers(0, 2**16))).uniform(-1, 1, (frames, channels)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype)
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none", "truncate", "flip", "random", "overwrite"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
    elif damage == "random":
        data = bytearray(draw(st.binary(min_size=0, max_size=4096)))
    elif damage == "overwrite":  # a header field set to an extreme value
        position = draw(st.integers(0, min(64, len(data) - 4)))
        data[position: position + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]))
    return fmt, bytes(data)


def reader_target(directory):
    @settings(max_examples=READER_EXAMPLES, **SETTINGS)
    @given(case=damaged_files())
    def fuzz_read_audio(case):
        """read_audio: float32 (channels, samples) that is finite, 1-8 channels at 8-192 kHz; else AudioError."""
        COUNTS["reader"] += 1
        fmt, data = case
        path = directory / f"case.{fmt.lower()}"
        path.write_bytes(data)
        try:
            audio, rate = read_audio(path)
        except AudioError as error:
            assert str(error).startswith(str(path)), error
            return
        assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[1] > 0
        assert 1 <= audio.shape[0] <= MAX_CHANNELS and MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE
        assert np.isfinite(audio).all()
        COUNTS["reader read"] += 1

    return fuzz_read_audio


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    fuzz_denoise()
    with tempfile.TemporaryDirectory() as folder:
        reader_target(Path(folder))()
    print(json.dumps(COUNTS))
