import json

import numpy as np
import pytest

from cassette_denoise import evaluate
from cassette_denoise.audio import AudioError, write_audio
from cassette_denoise.cli import main
from cassette_denoise.peers import align, all_peers, quietest_passage

SAMPLE_RATE = 16_000


def _music_and_hiss(seconds: float = 1.0, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stereo ``(clean, noisy)``: two tones that pause for the last 0.25 s, plus white hiss throughout."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    clean = 0.3 * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]) * (t < seconds - 0.25)
    noisy = clean + 0.003 * rng.standard_normal(clean.shape)
    return clean.astype(np.float32), noisy.astype(np.float32)


@pytest.fixture
def pair_files(tmp_path):
    clean, noisy = _music_and_hiss()
    write_audio(tmp_path / "song_clean.wav", clean, SAMPLE_RATE, subtype="FLOAT")
    write_audio(tmp_path / "song_noisy.wav", noisy, SAMPLE_RATE, subtype="FLOAT")
    write_audio(tmp_path / "song_denoised.wav", clean, SAMPLE_RATE, subtype="FLOAT")
    return tmp_path


def test_evaluate_cli_prints_a_table_and_writes_json_and_csv(pair_files, capsys):
    json_path, csv_path = pair_files / "scores.json", pair_files / "scores.csv"
    code = main([
        "evaluate", "--noisy", str(pair_files / "song_noisy.wav"), "--clean", str(pair_files / "song_clean.wav"),
        "--denoised", str(pair_files / "song_denoised.wav"), "--no-peers", "--strengths-db", "30",
        "--json", str(json_path), "--csv", str(csv_path),
    ])
    assert code == 0
    table = capsys.readouterr().out
    assert "SI-SDR dB" in table and "song_denoised.wav" in table
    rows = {row["method"]: row for row in json.loads(json_path.read_text())}
    assert set(rows) >= {"input", "song_denoised.wav"}
    ours = [row for method, row in rows.items() if method.startswith("ours")]
    assert len(ours) == 1 and ours[0]["metrics"] is not None, ours  # the bundled model ran
    # ... and took hiss out (35.8 -> 37.3 dB SI-SDR, 13.6 -> 10.6 dB LSDf80 here); the input row is the file as is.
    assert ours[0]["metrics"]["si_sdr_db"] > rows["input"]["metrics"]["si_sdr_db"] + 1, ours
    assert ours[0]["metrics"]["lsd_f80_db"] < rows["input"]["metrics"]["lsd_f80_db"] - 2, ours
    assert rows["song_denoised.wav"]["metrics"]["seg_snr_db"] == 35.0
    assert rows["input"]["metrics"]["si_sdr_db"] < 40
    assert csv_path.read_text().startswith("file,method,si_sdr_db")


def test_pairs_folder_without_manifest_pairs_files_by_name(pair_files):
    pair = evaluate.load_pairs(pair_files)[0]
    assert (pair.name, pair.noisy.name, pair.clean.name) == ("song", "song_noisy.wav", "song_clean.wav")


def test_pairs_folder_with_manifest(pair_files):
    manifest = {"examples": [{"name": "a", "noisy": "song_noisy.wav", "clean": "song_clean.wav"}]}
    (pair_files / "manifest.json").write_text(json.dumps(manifest))
    rows = evaluate.evaluate_pair(evaluate.load_pairs(pair_files)[0])
    assert [(row.file, row.method) for row in rows] == [("a", "input")]


def test_evaluate_cli_on_a_pairs_folder_shows_the_mean(pair_files, capsys):
    clean, noisy = _music_and_hiss(seed=1)
    write_audio(pair_files / "other_clean.wav", clean, SAMPLE_RATE)
    write_audio(pair_files / "other_noisy.wav", noisy, SAMPLE_RATE)
    assert main(["evaluate", "--pairs", str(pair_files), "--no-peers", "--strengths-db", "30"]) == 0
    assert "mean of 2" in capsys.readouterr().out


def test_malformed_manifest_is_an_audio_error(pair_files):
    (pair_files / "manifest.json").write_text('{"examples": [{"noisy": "x.wav"}]}')
    with pytest.raises(AudioError, match="manifest"):
        evaluate.load_pairs(pair_files)


def test_pairs_of_very_different_length_are_refused(tmp_path):
    clean, noisy = _music_and_hiss()
    write_audio(tmp_path / "clean.wav", clean, SAMPLE_RATE)
    write_audio(tmp_path / "noisy.wav", noisy[:, : SAMPLE_RATE // 2], SAMPLE_RATE)
    with pytest.raises(AudioError, match="lengths differ"):
        evaluate.evaluate_pair(evaluate.Pair("x", tmp_path / "noisy.wav", tmp_path / "clean.wav"))


def test_compare_writes_a_png(pair_files):
    out = pair_files / "compare.png"
    code = main([
        "compare", str(pair_files / "song_noisy.wav"), str(pair_files / "song_denoised.wav"),
        "--clean", str(pair_files / "song_clean.wav"), "-o", str(out),
    ])
    assert code == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_quietest_passage_finds_the_pause():
    _, noisy = _music_and_hiss()
    span = quietest_passage(noisy, SAMPLE_RATE, duration_s=0.2)
    assert span.start >= int(0.75 * SAMPLE_RATE)


def test_align_undoes_a_delay():
    _, noisy = _music_and_hiss()
    delayed = np.pad(noisy, ((0, 0), (37, 0)))[:, : noisy.shape[1]]
    np.testing.assert_array_equal(align(delayed, noisy, max_lag_samples=100)[:, :-37], noisy[:, :-37])


@pytest.mark.parametrize("peer", all_peers(), ids=lambda peer: peer.name)
def test_peer_keeps_the_shape(peer):
    if not peer.available():
        pytest.skip(f"{peer.name} needs {peer.requirement}")
    _, noisy = _music_and_hiss()
    out = peer.denoise(noisy, SAMPLE_RATE)
    assert out.shape == noisy.shape and np.isfinite(out).all()


def test_compare_says_when_it_cuts_files_of_unequal_length(pair_files, capsys):
    clean, _ = _music_and_hiss()
    write_audio(pair_files / "short.wav", clean[:, :12_000], SAMPLE_RATE, subtype="FLOAT")
    assert main(["compare", str(pair_files / "song_noisy.wav"), str(pair_files / "short.wav"),
                 "-o", str(pair_files / "c.png")]) == 0
    assert "song_noisy.wav is 4000 samples longer" in capsys.readouterr().err


def test_evaluate_refuses_a_model_it_cannot_load(pair_files, capsys):
    (pair_files / "README.md").write_text("# not a model")
    assert main(["evaluate", "--noisy", str(pair_files / "song_noisy.wav"), "--clean", str(pair_files / "song_clean.wav"),
                 "--no-peers", "--model", str(pair_files / "README.md")]) == 2
    assert "README.md: not a model file" in capsys.readouterr().err
