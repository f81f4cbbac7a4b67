"""Training pairs on disk: level matching, manifests, determinism, and the make-pairs command."""

import csv
import json

import numpy as np
import pytest

from cassette_denoise.audio import MODEL_SAMPLE_RATE as SR, read_audio, resample, write_audio
from cassette_denoise.cli import main
from cassette_denoise.corpus.pairs import PairFilesConfig, add_noise, make_pairs, noise_excerpt
from cassette_denoise.simulate import apply_cassette, params_from_json

QUANTUM = 2.0**-23  # 24-bit files


def tone(seconds: float, rate: int, channels: int, *, level: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    x = [np.sin(2 * np.pi * rng.uniform(100, 3000) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * t)) for _ in range(channels)]
    return (level * np.stack(x)).astype(np.float32)


@pytest.fixture
def folders(tmp_path):
    clean, noise = tmp_path / "clean", tmp_path / "noise"
    (clean / "album").mkdir(parents=True)
    noise.mkdir()
    write_audio(clean / "album" / "a.flac", tone(2.0, 48_000, 1, level=0.3, seed=1), 48_000, subtype="PCM_24")
    write_audio(clean / "b.wav", tone(3.0, SR, 2, level=0.2, seed=2), SR, subtype="PCM_24")
    hiss = 10 ** (-50 / 20) * np.random.default_rng(3).standard_normal((2, SR // 3))  # shorter than an excerpt: loops
    write_audio(noise / "blank.wav", hiss.astype(np.float32), SR, subtype="FLOAT")
    return clean, noise


def source_excerpt(clean_dir, example) -> np.ndarray:
    audio, rate = read_audio(clean_dir / example["source"])
    start = example["source_offset_samples"]
    return resample(audio, rate, SR)[:, start : start + example["samples"]]


def test_noise_excerpt_loops_and_decorrelates_reused_channels():
    noise = np.arange(10, dtype=np.float32)[None]
    excerpt, offsets = noise_excerpt(noise, channels=2, samples=25, rng=np.random.default_rng(0))
    assert excerpt.shape == (2, 25) and len(offsets) == 2
    for channel, offset in enumerate(offsets):
        np.testing.assert_array_equal(excerpt[channel], (offset + np.arange(25)) % 10)


def test_add_noise_leaves_the_music_level_unchanged():
    clean = tone(1.0, SR, 2, level=0.2, seed=0)
    noise = np.random.default_rng(1).standard_normal(clean.shape).astype(np.float32)
    noisy = add_noise(clean, noise, gain_db=-40.0)
    np.testing.assert_allclose(noisy - clean, 0.01 * noise, atol=1e-6)


def test_make_pairs_with_recorded_noise_keeps_the_music_level(folders, tmp_path):
    clean_dir, noise_dir = folders
    examples = make_pairs(clean_dir, tmp_path / "out", noise_dir=noise_dir, config=PairFilesConfig(
        count=4, seed=1, duration_s=0.5, noise_fraction=1.0, noise_gain_db=(0.0, 6.0)))
    assert [example["kind"] for example in examples] == ["recorded-noise"] * 4
    for example in examples:
        clean, rate = read_audio(tmp_path / "out" / example["clean"])
        noisy, _ = read_audio(tmp_path / "out" / example["noisy"])
        excerpt = source_excerpt(clean_dir, example)
        assert rate == SR and clean.shape == noisy.shape == excerpt.shape == (excerpt.shape[0], SR // 2)
        assert example["headroom_gain_db"] == 0.0
        # The clean file is the excerpt itself; the noisy one adds only noise at the drawn gain.
        np.testing.assert_allclose(clean, excerpt, atol=QUANTUM)
        assert np.sqrt(np.mean(clean**2)) == pytest.approx(np.sqrt(np.mean(excerpt**2)), rel=1e-4)
        noise_db = 10 * np.log10(np.mean((noisy - clean) ** 2))
        assert noise_db == pytest.approx(-50.0 + example["noise"]["gain_db"], abs=0.5)
        assert example["noise"]["file"] == "blank.wav"


def test_make_pairs_without_noise_uses_the_simulator_and_logs_its_params(folders, tmp_path):
    clean_dir, _ = folders
    examples = make_pairs(clean_dir, tmp_path / "out",
                          config=PairFilesConfig(count=3, seed=2, duration_s=0.5, file_format="flac"))
    for example in examples:
        assert example["kind"] == "simulator" and example["noisy"].endswith(".flac")
        # The manifest holds everything needed to rebuild the pair.
        params = params_from_json(example["simulator"]["params"])
        expected = apply_cassette(source_excerpt(clean_dir, example), SR, params)
        gain = 10 ** (example["headroom_gain_db"] / 20)
        clean, _ = read_audio(tmp_path / "out" / example["clean"])
        noisy, _ = read_audio(tmp_path / "out" / example["noisy"])
        np.testing.assert_allclose(clean, gain * expected.target, atol=2 * QUANTUM)
        np.testing.assert_allclose(noisy, gain * expected.noisy, atol=2 * QUANTUM)


def test_make_pairs_is_deterministic_per_seed(folders, tmp_path):
    clean_dir, noise_dir = folders
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        make_pairs(clean_dir, tmp_path / name, noise_dir=noise_dir,
                   config=PairFilesConfig(count=6, seed=seed, duration_s=0.25))
        runs[name] = {path.name: path.read_bytes() for path in sorted((tmp_path / name).iterdir())}
    assert runs["a"] == runs["b"]
    assert runs["a"]["00000_noisy.wav"] != runs["c"]["00000_noisy.wav"]
    kinds = {example["kind"] for example in json.loads(runs["a"]["manifest.json"])["examples"]}
    assert kinds == {"recorded-noise", "simulator"}  # noise fraction 0.5


@pytest.mark.parametrize("with_noise", [True, False])
def test_make_pairs_cli_writes_pairs_and_manifests(folders, tmp_path, with_noise):
    clean_dir, noise_dir = folders
    out = tmp_path / "pairs"
    args = ["make-pairs", "--clean", str(clean_dir), "--out", str(out),
            "--count", "3", "--seed", "0", "--duration-s", "0.25"]
    assert main(args + (["--noise", str(noise_dir)] if with_noise else [])) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sample_rate"] == SR and len(manifest["examples"]) == 3
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["noisy"] for row in rows] == [example["noisy"] for example in manifest["examples"]]
    for example in manifest["examples"]:
        assert (out / example["noisy"]).is_file() and (out / example["clean"]).is_file()
        assert example["source"] in {"album/a.flac", "b.wav"}
    if not with_noise:
        assert {example["kind"] for example in manifest["examples"]} == {"simulator"}


def test_make_pairs_cli_reports_a_folder_without_audio(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["make-pairs", "--clean", str(tmp_path / "empty"), "--out", str(tmp_path / "out"),
                 "--count", "1", "--seed", "0"]) == 2
    assert "no audio files" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, named", [("--count", "0", "count"), ("--duration-s", "-1", "duration_s"),
                                                  ("--noise-fraction", "1.5", "noise_fraction")])
def test_make_pairs_cli_names_a_bad_option_and_its_value(folders, tmp_path, capsys, option, value, named):
    clean_dir, _ = folders
    args = ["make-pairs", "--clean", str(clean_dir), "--out", str(tmp_path / "out"), "--count", "1", "--seed", "0"]
    assert main(args + [option, value]) == 2
    err = capsys.readouterr().err
    assert f"{named} must" in err and value in err


def test_make_pairs_reports_progress_once_per_pair(folders, tmp_path):
    clean_dir, _ = folders
    done = []
    make_pairs(clean_dir, tmp_path / "out", config=PairFilesConfig(count=3, seed=0, duration_s=0.25), progress=done.append)
    assert done == [1, 2, 3]
