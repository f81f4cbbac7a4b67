"""The validation layer: what the Python API accepts, what it refuses and how it says so."""

import numpy as np
import pytest

from cassette_denoise.validate import MAX_ABS_SAMPLE, check_audio_array, check_channels, check_sample_rate


@pytest.mark.parametrize("audio,rate,error,words", [
    (np.zeros((8820, 2), np.float32), 44100, ValueError, "(8820, 2).*pass audio.T"),
    (np.zeros((9, 44100), np.float32), 44100, ValueError, "9 channels"),
    (np.zeros((0, 4410), np.float32), 44100, ValueError, "0 channels"),
    (np.zeros((2, 0), np.float32), 44100, ValueError, r"no samples \(shape \(2, 0\)\)"),
    (np.zeros((1, 2, 30), np.float32), 44100, ValueError, r"shape \(1, 2, 30\)"),
    (np.float32(0.1), 44100, ValueError, "scalar"),
    (np.ones((1, 100), bool), 44100, TypeError, "dtype bool"),
    (np.ones((1, 100), np.complex64), 44100, TypeError, "dtype complex64"),
    (np.ones((1, 100), np.int64), 44100, TypeError, "dtype int64"),
    (np.ones((1, 100), np.uint16), 44100, TypeError, "dtype uint16"),
    (np.array([["a", "b"]]), 44100, TypeError, "dtype <U1"),
    ("not audio", 44100, TypeError, "got str"),
    (np.zeros((1, 100), np.float32), 1, ValueError, "sample_rate 1 Hz"),
    (np.zeros((1, 100), np.float32), 7999, ValueError, "7999 Hz"),
    (np.zeros((1, 100), np.float32), 192001, ValueError, "192001 Hz"),
    (np.zeros((1, 100), np.float32), 10**9, ValueError, "1000000000 Hz"),
    (np.zeros((1, 100), np.float32), float("nan"), ValueError, "nan"),
    (np.zeros((1, 100), np.float32), float("inf"), ValueError, "inf"),
    (np.zeros((1, 100), np.float32), 44100.5, ValueError, "44100.5"),
    (np.zeros((1, 100), np.float32), "44100", TypeError, "'44100'"),
    (np.zeros((1, 100), np.float32), True, TypeError, "True"),
    (np.full((1, 100), np.nan, np.float32), 44100, ValueError, "non-finite sample \\(nan\\)"),
    (np.full((1, 100), -np.inf, np.float64), 44100, ValueError, "non-finite sample \\(-inf\\)"),
    (np.full((1, 100), 3e38, np.float32), 44100, ValueError, "3e\\+38"),
    (np.full((1, 100), 1e300, np.float64), 44100, ValueError, "1e\\+300"),
    (np.full((1, 100), MAX_ABS_SAMPLE * 1.01, np.float32), 44100, ValueError, "1010"),
])
def test_bad_input_is_refused_naming_the_value(audio, rate, error, words):
    with pytest.raises(error, match=words):
        check_audio_array(audio, rate)


def test_the_denoiser_refuses_through_the_same_layer(denoiser):
    with pytest.raises(ValueError, match="pass audio.T"):
        denoiser.denoise(np.zeros((8820, 2), np.float32), 44100)
    with pytest.raises(ValueError, match="7999 Hz"):
        denoiser.stream(channels=1, sample_rate=7999)
    with pytest.raises(ValueError, match="9 channels"):
        denoiser.stream(channels=9, sample_rate=44100)
    stream = denoiser.stream(channels=2, sample_rate=44100)
    with pytest.raises(ValueError, match="has 1 channels, expected 2"):
        stream.process(np.zeros((1, 100), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        stream.process(np.full((2, 100), np.inf, np.float32))


@pytest.mark.parametrize("dtype,value,expected", [
    (np.int16, -32768, -1.0), (np.int16, 16384, 0.5), (np.int32, 2**30, 0.5), (np.int8, -64, -0.5),
    (np.uint8, 128, 0.0), (np.uint8, 0, -1.0), (np.uint8, 192, 0.5),
])
def test_integer_pcm_is_scaled_by_its_full_scale(dtype, value, expected):
    out = check_audio_array(np.full((1, 10), value, dtype), 44100)
    assert out.dtype == np.float32 and out.shape == (1, 10)
    np.testing.assert_array_equal(out, np.float32(expected))


def test_layouts_that_are_accepted():
    assert check_audio_array(np.zeros(5, np.float32), 8000).shape == (1, 5)
    assert check_audio_array(np.zeros((8, 3), np.float64), 192000).shape == (8, 3)  # 8 channels, 3 samples
    assert check_audio_array([0.0, 0.5], 44100.0).shape == (1, 2)
    assert check_sample_rate(np.int64(48000)) == 48000 and check_sample_rate(44100.0) == 44100
    assert check_channels(np.int32(2)) == 2


def test_the_input_is_neither_modified_nor_shared():
    audio = np.linspace(-1, 1, 200, dtype=np.float32).reshape(2, 100)
    audio.setflags(write=False)
    out = check_audio_array(audio, 44100)
    assert not np.shares_memory(out, audio) and out.flags.writeable
    np.testing.assert_array_equal(out, audio)


def test_the_denoiser_keeps_the_input_and_its_shape(denoiser):
    audio = (np.random.default_rng(0).standard_normal(4410) * 0.1).astype(np.float32)
    audio.setflags(write=False)
    before = audio.copy()
    out = denoiser.denoise(audio, 44100)
    assert out.shape == audio.shape and out.dtype == np.float32
    np.testing.assert_array_equal(audio, before)


def test_integer_pcm_denoises_like_the_same_float_audio(denoiser):
    pcm = (np.random.default_rng(1).standard_normal((2, 4410)) * 3000).astype(np.int16)
    np.testing.assert_array_equal(denoiser.denoise(pcm, 44100), denoiser.denoise(pcm / np.float32(32768), 44100))


@pytest.mark.parametrize("rate", [8000, 44100, 192000])
def test_the_loudest_accepted_audio_still_gives_finite_output(denoiser, rate):
    rng = np.random.default_rng(2)
    loud = np.sign(rng.standard_normal((2, rate // 5))).astype(np.float32) * MAX_ABS_SAMPLE
    out = denoiser.denoise(loud, rate)
    assert np.isfinite(out).all()
