"""A noise floor measured on a clip of the tape's noise alone, given to the model in place of each tile's own."""

import numpy as np
import pytest
import torch

from cassette_denoise import spectral, tiles
from cassette_denoise.audio import resample
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.tiles import NOISE_FLOOR_CONTEXT_FRAMES, TILE_FRAMES, TILE_OVERLAP_FRAMES
from cassette_denoise.model import UNet, UNetConfig
from cassette_denoise.validate import MIN_NOISE_CLIP_S

from conftest import music_like, stream_in_random_blocks


def hiss(channels: int, seconds: float, sample_rate: int, *, seed: int = 0, level: float = 0.01) -> np.ndarray:
    """White noise 20 dB louder in each further channel, float32 ``(channels, samples)``."""
    rng = np.random.default_rng(seed)
    gains = level * 10.0 ** np.arange(channels)[:, None]
    return (rng.standard_normal((channels, int(seconds * sample_rate))) * gains).astype(np.float32)


class RecordingModel(torch.nn.Module):
    """A noise-floor model that keeps every input it was given, ``(batch, 2, BINS, frames)`` each."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.inner = UNet(UNetConfig(base_width=2, noise_floor_input=True))
        self.config = self.inner.config
        self.inputs: list[torch.Tensor] = []

    def forward(self, features: torch.Tensor, *, logits: bool = False) -> torch.Tensor:
        self.inputs.append(features.clone())
        return self.inner(features, logits=logits)


@pytest.fixture(scope="module")
def floor_model() -> UNet:
    torch.manual_seed(1)
    return UNet(UNetConfig(base_width=2, noise_floor_input=True)).eval()


@pytest.fixture()
def floor_denoiser(floor_model) -> Denoiser:
    # float32 on every machine: a floor 0.2 off must change a tiny random model's mask, which bfloat16 may round away.
    return Denoiser(floor_model, device="cpu", remove_hum=False, precision="float32")


@pytest.mark.parametrize("sample_rate,channels", [(44100, 1), (48000, 2), (22050, 2)])
def test_the_floor_of_a_clip_is_the_noise_floor_of_its_spectra_at_the_model_rate(floor_denoiser, sample_rate, channels):
    clip = hiss(channels, 1.3, sample_rate)
    at_model_rate = torch.from_numpy(resample(clip, sample_rate, 44100))
    expected = spectral.noise_floor(spectral.stft(spectral.pad_signal(at_model_rate)).abs())
    floor = floor_denoiser.noise_floor(clip, sample_rate)
    assert floor.shape == (channels, spectral.BINS)
    torch.testing.assert_close(floor, expected, rtol=0, atol=0)
    if channels == 2:  # the louder channel has the higher floor in every bin the resampler passes
        passed = (spectral.bin_frequencies_hz() > 0) & (spectral.bin_frequencies_hz() < 0.4 * min(sample_rate, 44100))
        assert torch.all(floor[1, passed] > floor[0, passed])


def test_the_floor_goes_through_the_streams_own_front_hum_stage_included(floor_model):
    class Tap:
        def __init__(self):
            self.blocks = []

        def model_audio(self, block):
            self.blocks.append(block)

        def mask(self, mask):
            pass

    sample_rate = 48000
    t = np.arange(4 * sample_rate) / sample_rate
    hum = sum(0.02 / k * np.sin(2 * np.pi * 50 * k * t) for k in range(1, 6))
    clip = (hiss(1, 4.0, sample_rate, level=0.002) + hum).astype(np.float32)
    denoiser = Denoiser(floor_model, device="cpu", remove_hum=True)
    tap = Tap()
    stream = denoiser.stream(channels=1, sample_rate=sample_rate, tap=tap)
    for start in range(0, clip.shape[1], 20_011):
        stream.process(clip[:, start: start + 20_011])
    stream.finish()
    seen = torch.from_numpy(np.concatenate(tap.blocks, axis=1))
    expected = spectral.noise_floor(spectral.stft(spectral.pad_signal(seen)).abs())
    torch.testing.assert_close(denoiser.noise_floor(clip, sample_rate), expected, rtol=0, atol=1e-6)
    # The hum stage took the hum out of the clip, so its floor at 50 Hz is lower than without the stage.
    without = Denoiser(floor_model, device="cpu", remove_hum=False).noise_floor(clip, sample_rate)
    assert denoiser.noise_floor(clip, sample_rate)[0, 1] < without[0, 1] - 0.05


def test_a_given_floor_changes_the_mask_input_and_nothing_else(monkeypatch):
    # One thread: the channels run one after the other, so the recorded inputs alternate between them.
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    model = RecordingModel()
    denoiser = Denoiser(model, device="cpu", remove_hum=False)
    audio = music_like(2, 44100 * 7, 44100, seed=6)
    floor = denoiser.noise_floor(hiss(2, 2.0, 44100, seed=7), 44100)
    denoiser.denoise(audio, 44100)
    own = model.inputs
    model.inputs = []
    denoiser.denoise(audio, 44100, noise_floor=floor)
    given = model.inputs
    assert len(given) == len(own) > 2  # several tiles, one channel at a time
    for index, (before, after) in enumerate(zip(own, given)):
        torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=0)  # the spectrogram is untouched
        channel = index % 2
        expected = floor[channel][:, None].expand(spectral.BINS, after.shape[-1])
        torch.testing.assert_close(after[0, 1], expected, rtol=0, atol=0)
    assert not all(torch.equal(a[:, 1], b[:, 1]) for a, b in zip(own, given))


def test_the_floor_of_the_audio_itself_equals_the_automatic_estimate_when_one_tile_spans_it(floor_denoiser):
    samples = (TILE_FRAMES - 1) * spectral.HOP  # frame_count(samples) == TILE_FRAMES: every tile sees all frames
    assert spectral.frame_count(samples) == TILE_FRAMES
    audio = music_like(1, samples, 44100, seed=8) + hiss(1, samples / 44100, 44100, level=0.003)
    own = floor_denoiser.noise_floor(audio, 44100)
    np.testing.assert_array_equal(floor_denoiser.denoise(audio, 44100, noise_floor=own), floor_denoiser.denoise(audio, 44100))


def test_streaming_with_a_floor_in_odd_blocks_equals_the_whole_array(floor_denoiser):
    sample_rate = 32000
    audio = music_like(2, int(sample_rate * 6.5) + 13, sample_rate, seed=9)  # two tiles
    floor = floor_denoiser.noise_floor(hiss(1, 1.5, 44100, seed=10), 44100)  # mono: serves both channels
    whole = floor_denoiser.denoise(audio, sample_rate, noise_floor=floor)
    stream = floor_denoiser.stream(channels=2, sample_rate=sample_rate, noise_floor=floor)
    np.testing.assert_allclose(stream_in_random_blocks(stream, audio, max_block=50_000, seed=1), whole,
                               rtol=0, atol=1e-6)
    # A mono floor is the same floor for every channel; another floor gives another output.
    np.testing.assert_array_equal(floor_denoiser.denoise(audio, sample_rate, noise_floor=floor.expand(2, -1)), whole)
    assert not np.array_equal(floor_denoiser.denoise(audio, sample_rate, noise_floor=floor + 0.2), whole)
    assert not np.array_equal(floor_denoiser.denoise(audio, sample_rate), whole)


def test_denoise_file_takes_a_floor(tmp_path, floor_denoiser):
    import soundfile as sf

    audio = music_like(2, 44100 * 3, 44100, seed=11)
    sf.write(tmp_path / "in.wav", audio.T, 44100, subtype="FLOAT")
    floor = floor_denoiser.noise_floor(hiss(2, 1.0, 44100), 44100)
    floor_denoiser.denoise_file(tmp_path / "in.wav", tmp_path / "out.wav", noise_floor=floor)
    written, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    np.testing.assert_array_equal(written.T, floor_denoiser.denoise(audio, 44100, noise_floor=floor))


@pytest.mark.parametrize("clip,rate,message", [
    (hiss(1, MIN_NOISE_CLIP_S * 0.5, 44100), 44100, "0.5 s long"),
    (hiss(2, MIN_NOISE_CLIP_S - 0.01, 8000), 8000, "at least 1 s"),
    (np.zeros((2, 44100 * 2), np.float32), 44100, "digital silence (peak 0)"),
    (np.full((1, 44100 * 2), 2.0**-26, np.float32), 44100, "digital silence"),
    (np.where(np.arange(88200) == 500, np.nan, 0.01).astype(np.float32)[None], 44100, "non-finite sample (nan)"),
])
def test_bad_clips_are_refused_naming_the_value(floor_denoiser, clip, rate, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        floor_denoiser.noise_floor(clip, rate)


def test_a_floor_of_other_channels_or_values_or_for_a_model_without_the_input_is_refused(floor_denoiser, random_model):
    audio = music_like(3, 44100 * 2, 44100)
    stereo = floor_denoiser.noise_floor(hiss(2, 1.0, 44100), 44100)
    with pytest.raises(ValueError, match="noise floor has 2 channels and the audio 3"):
        floor_denoiser.denoise(audio, 44100, noise_floor=stereo)
    with pytest.raises(ValueError, match="must be"):
        floor_denoiser.denoise(audio, 44100, noise_floor=stereo[:, :100])
    with pytest.raises(ValueError, match="holds nan"):
        floor_denoiser.denoise(audio, 44100, noise_floor=torch.full((spectral.BINS,), float("nan")))
    with pytest.raises(ValueError, match="no noise-floor input"):
        Denoiser(random_model, device="cpu").denoise(audio, 44100, noise_floor=stereo[:1])


def test_a_model_that_carries_a_floor_gets_it_unless_a_call_gives_another(floor_model):
    audio = music_like(2, 2 * 44100, 44100) + hiss(2, 2.0, 44100, level=0.003)
    carried = torch.linspace(-0.9, -0.5, spectral.BINS)
    plain = Denoiser(floor_model, device="cpu", remove_hum=False, precision="float32")
    carrying = Denoiser(floor_model, device="cpu", remove_hum=False, precision="float32",
                        metadata={"noise_floor": carried.tolist()})
    np.testing.assert_array_equal(carrying.denoise(audio, 44100), plain.denoise(audio, 44100, noise_floor=carried))
    other = plain.noise_floor(hiss(1, 1.5, 44100, level=0.003), 44100)
    np.testing.assert_array_equal(carrying.denoise(audio, 44100, noise_floor=other),
                                  plain.denoise(audio, 44100, noise_floor=other))
    assert not np.array_equal(carrying.denoise(audio, 44100), plain.denoise(audio, 44100))


def test_a_carried_floor_that_does_not_fit_the_model_is_a_value_error(floor_model):
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        Denoiser(floor_model, device="cpu", metadata={"noise_floor": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="no noise-floor input"):
        Denoiser(UNet(UNetConfig(base_width=2)), device="cpu", metadata={"noise_floor": [-0.5] * spectral.BINS})


def test_each_tiles_automatic_floor_is_taken_over_the_tile_and_its_context(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the channels' inputs alternate, in tile order
    model = RecordingModel()
    denoiser = Denoiser(model, device="cpu", remove_hum=False, remove_whine=False, precision="float32")
    audio = music_like(2, 44100 * 31, 44100, seed=11) + hiss(2, 31, 44100, seed=12, level=0.002)
    stream = denoiser.stream(channels=2, sample_rate=44100)
    stream_in_random_blocks(stream, audio, max_block=70_000, seed=2)
    magnitude = spectral.stft(spectral.pad_signal(torch.from_numpy(audio))).abs()
    frames = magnitude.shape[-1]
    hop = TILE_FRAMES - TILE_OVERLAP_FRAMES
    starts = [*range(0, frames - TILE_FRAMES + 1, hop), frames - TILE_FRAMES]
    assert len(model.inputs) == 2 * len(starts) and len(starts) >= 6
    for index, features in enumerate(model.inputs):
        start, channel = starts[index // 2], index % 2
        window = magnitude[channel, :, max(0, start - NOISE_FLOOR_CONTEXT_FRAMES): start + TILE_FRAMES
                           + NOISE_FLOOR_CONTEXT_FRAMES]
        torch.testing.assert_close(features[0, 1, :, 0], spectral.noise_floor(window), rtol=0, atol=1e-5)


def test_the_context_finds_the_hiss_under_a_tile_of_dense_music(monkeypatch):
    model = RecordingModel()
    denoiser = Denoiser(model, device="cpu", remove_hum=False, remove_whine=False, precision="float32")
    sample_rate, seconds = 44100, 24
    noise = hiss(1, seconds, sample_rate, seed=13, level=0.001)
    music = music_like(1, seconds * sample_rate, sample_rate, seed=14) * 4
    music[:, : 5 * sample_rate] = 0  # music from 5 s to 11 s only: the second tile (5.2-11.1 s) is all music
    music[:, 11 * sample_rate:] = 0
    audio = noise + music
    hiss_floor = denoiser.noise_floor(noise, sample_rate)[0]

    def second_tiles_floor() -> torch.Tensor:
        model.inputs = []
        denoiser.denoise(audio, sample_rate)
        return model.inputs[1][0, 1, :, 0]

    with_context = second_tiles_floor()
    monkeypatch.setattr(tiles, "NOISE_FLOOR_CONTEXT_FRAMES", 0)
    tile_alone = second_tiles_floor()
    # A feature unit is 60 dB. Where the music never pauses in the tile, the tile alone reads 6 dB or more above
    # the hiss; with the quiet frames around it, within 3 dB (a third of the window is music).
    music_bins = (tile_alone - hiss_floor) > 0.1
    assert music_bins.sum() >= 5
    assert (with_context - hiss_floor)[music_bins].abs().max() < 0.05


def test_streaming_with_the_automatic_floor_in_odd_blocks_equals_the_whole_array(floor_denoiser):
    sample_rate = 32000
    audio = music_like(2, sample_rate * 20 + 7, sample_rate, seed=15)  # tiles that each see context both sides
    whole = floor_denoiser.denoise(audio, sample_rate)
    stream = floor_denoiser.stream(channels=2, sample_rate=sample_rate)
    np.testing.assert_allclose(stream_in_random_blocks(stream, audio, max_block=90_000, seed=3), whole,
                               rtol=0, atol=1e-6)
