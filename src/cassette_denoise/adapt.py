"""Adapting a model to one deck's noise: ``cassette-denoise adapt BLANK.wav ... -o my-deck.safetensors``.

The seed's own recipe (clean music plus the user's recorded blank tape) as one call, :func:`adapt`:

1. the blank-tape recordings are read and checked (:mod:`cassette_denoise.blank_tape`); the first
   three quarters of each are the noise the model trains on, the last quarter is held out;
2. clean music: the user's (``music_dir``, any format, made into a corpus in the run folder), a
   ``cassette-denoise corpus`` folder (``corpus_dir``), or else Bach chorales rendered once with
   FluidSynth into a per-user cache (:func:`default_music`);
3. held-out pairs, the validation music plus the held-out noise at each of ``score_snrs_db``, score
   the starting model;
4. the starting model is fine-tuned with the training loop (:func:`cassette_denoise.training.train`)
   on its own recipe (its sidecar's ``training.config``), where most examples now carry the user's
   noise alone over clean music and the rest are the recipe's simulator examples, with the weights
   averaged, until the time left for it runs out (or ``max_steps``);
5. the same pairs score the adapted model, and the model is written with a sidecar that says it was
   adapted, from which model, on which noise, and the before/after table.

The run folder (``OUTPUT.adapt/``, next to the output) holds the training run, the noise it trains on
and, for ``music_dir``, the music corpus, so that ``resume`` continues where a run stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from cassette_denoise.audio import MODEL_SAMPLE_RATE, atomic_write, read_excerpt, write_audio
from cassette_denoise.blank_tape import MIN_TOTAL_S, BlankTape, read_blank_tapes
from cassette_denoise.checkpoint import load_model, save_model
from cassette_denoise.corpus import CorpusError, build_corpus, corpus_files, load_manifest, save_manifest
from cassette_denoise.denoiser import BUNDLED_MODEL, Denoiser
from cassette_denoise.metrics import si_sdr
from cassette_denoise.training import TrainConfig, train
from cassette_denoise.training.config import from_dict
from cassette_denoise.training.examples import Source, recorded_noise, scan_sources, snr_gain

log = logging.getLogger(__name__)

#: Where the default music is rendered once and reused: ``$XDG_CACHE_HOME`` or ``~/.cache``.
CACHE_FOLDER = Path("cassette-denoise") / "adapt-music"
#: Steps a run may take when only the time limit stops it.
UNLIMITED_STEPS = 1_000_000
#: Time kept back from training besides the second scoring, s: the loop's start (music, validation pairs)
#: is not on its clock, and its last validation and saves come after its limit.
FINISH_MARGIN_S = 30.0


class AdaptError(Exception):
    """A problem the user can fix (no music, a run folder in the way); the message says what to do."""


@dataclass(frozen=True)
class AdaptConfig:
    """How a model is adapted; the defaults are what ``cassette-denoise adapt`` does."""

    #: Share of each recording, at its end, kept out of training to score the models on.
    held_out_share: float = 0.25
    min_noise_s: float = MIN_TOTAL_S
    #: Share of training examples whose only noise is the user's; the rest are the recipe's own
    #: simulator examples, so the model keeps what it knew.
    recorded_noise_share: float = 0.85
    #: Music-to-noise ratios of those examples, dB.
    noise_snr_db: tuple[float, float] = (0.0, 35.0)
    #: One rate throughout: a fine-tune of a few hundred steps has no time to anneal, and the weight
    #: average does what a decaying rate would.
    learning_rate: float = 7e-4
    warmup_steps: int = 20
    #: Spans about the last 50 steps.
    weight_average_decay: float = 0.98
    #: The fine-tune's arithmetic (``defaults.PRECISIONS``): bfloat16 where the CPU computes it natively takes
    #: about 1.5× the steps in the same minutes.
    precision: str = "auto"
    validate_every_steps: int = 50
    score_snrs_db: tuple[float, ...] = (0.0, 10.0, 20.0)
    score_pairs_per_snr: int = 4
    score_pair_s: float = 8.0
    #: Bach chorales rendered for the default music (about 15 minutes).
    default_music_pieces: int = 24
    #: Train with each example's noise floor measured on its noise alone, and write the model with the floor
    #: of the blank tape, which it then always gets (for a model with a noise-floor input): knowing the
    #: deck's floor, the model need not guess it from the music (docs/adapt.md, "Measured").
    noise_floor_given: bool = True

    def __post_init__(self):
        if not 0.0 < self.held_out_share < 1.0:
            raise ValueError(f"held_out_share must be between 0 and 1, got {self.held_out_share}")
        if not 0.0 <= self.recorded_noise_share <= 1.0:
            raise ValueError(f"recorded_noise_share must be in [0, 1], got {self.recorded_noise_share}")


@dataclass(frozen=True)
class ScoreRow:
    """Mean SI-SDR of the held-out pairs at one input SNR, dB."""

    snr_db: float
    input_db: float
    before_db: float
    after_db: float

    @property
    def gain_db(self) -> float:
        return self.after_db - self.before_db


@dataclass(frozen=True)
class AdaptResult:
    model_path: Path
    run_dir: Path
    steps: int
    seconds: float
    noise: tuple[dict, ...]
    scores: tuple[ScoreRow, ...]
    #: The model carries the floor of the blank tape (:attr:`AdaptConfig.noise_floor_given`).
    carries_noise_floor: bool = False


@dataclass(frozen=True)
class _Pairs:
    """Held-out pairs, float32 ``(pairs, samples)`` each, and the input SNR of each pair."""

    clean: np.ndarray
    noisy: np.ndarray
    snr_db: np.ndarray


def adapt(noise_paths: list[str | os.PathLike], output: str | os.PathLike, *, music_dir: str | os.PathLike | None = None,
          corpus_dir: str | os.PathLike | None = None, model_path: str | os.PathLike | None = None,
          max_minutes: float = 10.0, max_steps: int | None = None, resume: bool = False, threads: int = 1,
          seed: int = 0, device: str = "auto", config: AdaptConfig = AdaptConfig(),
          on_stage: Callable[[str], None] | None = None, on_step: Callable[[int, float], None] | None = None,
          on_training: Callable[[float], None] | None = None) -> AdaptResult:
    """Fine-tune ``model_path`` (default: the bundled model) on the noise of ``noise_paths`` and write it to
    ``output`` (``.safetensors`` + ``.json``); the whole call ends within ``max_minutes``.

    ``on_stage(line)`` hears what is being done, ``on_training(seconds)`` how long training may run (once,
    before it starts) and ``on_step(step, loss)`` each step.

    Raises:
        AudioError: a noise file that cannot be read.
        NoiseError: a noise file that is silent or holds music, or too little noise in all.
        AdaptError: no clean music, or a run folder from an earlier run without ``resume``.
        CheckpointError: a starting model that cannot be loaded.
    """
    deadline = time.monotonic() + max_minutes * 60
    stage = on_stage or (lambda line: None)
    output, run_dir = _output_paths(output)
    if (run_dir / "state.json").exists() and not resume:
        raise AdaptError(f"{run_dir}: holds an earlier adapt run; continue it with --resume, or remove the folder")
    stage("checking the blank-tape noise")
    tapes = read_blank_tapes(noise_paths, min_total_s=config.min_noise_s)
    with contextlib.ExitStack() as stack:
        start_path = Path(model_path) if model_path else stack.enter_context(_bundled_model_path())
        start_model, start_sidecar = load_model(start_path)
        calibration = start_sidecar.get("calibration", {})
        run_dir.mkdir(parents=True, exist_ok=True)
        noise = _prepare_noise(run_dir, tapes, held_out_share=config.held_out_share, resume=resume)
        corpus = _music(run_dir, music_dir=music_dir, corpus_dir=corpus_dir, config=config, stage=stage)
        pairs = held_out_pairs(corpus, [tape.split(held_out_share=config.held_out_share)[1] for tape in tapes],
                               config=config, seed=seed)
        stage(f"scoring the starting model on {len(pairs.snr_db)} held-out pairs")
        scoring_started = time.monotonic()
        before = _scores(Denoiser(start_model, metadata=start_sidecar, device=device), pairs)
        scoring_s = time.monotonic() - scoring_started
        train_config = adapt_train_config(
            start_sidecar, start_model.config, run_dir=run_dir, corpus_dir=corpus, init_from=start_path, config=config,
            max_steps=max_steps, threads=threads, seed=seed, device=device,
            max_minutes=_training_minutes(run_dir, deadline - time.monotonic() - 1.5 * scoring_s - FINISH_MARGIN_S,
                                          resume=resume))
        stage("training")
        if on_training:
            on_training(train_config.max_minutes * 60 - _elapsed_s(run_dir, resume=resume))
        state = train(train_config, resume=resume, on_step=on_step)
        adapted, _ = load_model(run_dir / "best.safetensors")
        carried = {}
        if train_config.validation_floor_from_noise:
            carried["noise_floor"] = blank_tape_floor(Denoiser(adapted, device=device), tapes)
        stage("scoring the adapted model")
        after = _scores(Denoiser(adapted, metadata={"calibration": calibration, **carried}, device=device), pairs)
    scores = tuple(ScoreRow(snr, *row_before, after_db) for snr, row_before, after_db in
                   zip(config.score_snrs_db, before, (row[1] for row in after)))
    metadata = _metadata(run_dir, start_path if model_path else BUNDLED_MODEL, calibration, noise, state, scores,
                         corpus) | carried
    save_model(output, adapted, metadata=metadata)
    return AdaptResult(output, run_dir, state["step"], state["elapsed_s"], tuple(noise), scores,
                       carries_noise_floor=bool(carried))


def _output_paths(output: str | os.PathLike) -> tuple[Path, Path]:
    """The model file (``NAME.safetensors``; a name without a suffix gets it) and its run folder ``NAME.adapt``."""
    output = Path(output)
    if output.suffix == "":
        output = output.with_suffix(".safetensors")
    if output.suffix != ".safetensors":
        raise AdaptError(f"{output}: a model is written as NAME.safetensors (with NAME.json beside it)")
    return output, output.with_suffix(".adapt")


@contextlib.contextmanager
def _bundled_model_path():
    weights = resources.files("cassette_denoise") / "weights" / f"{BUNDLED_MODEL}.safetensors"
    with resources.as_file(weights) as path:
        yield path


def _prepare_noise(run_dir: Path, tapes: list[BlankTape], *, held_out_share: float, resume: bool) -> list[dict]:
    """Write the part of each recording that training may use to ``run_dir/noise/``, and describe each
    recording; a resumed run must be given the same recordings.

    Raises:
        AdaptError: ``resume`` with other recordings than the run started with.
    """
    noise = [{"file": tape.path.name, "seconds": round(tape.seconds, 2), "sample_rate": tape.source_sample_rate,
              "channels": tape.audio.shape[0],
              "trained_seconds": round(tape.split(held_out_share=held_out_share)[0].shape[1] / MODEL_SAMPLE_RATE, 2)}
             for tape in tapes]
    described = run_dir / "noise.json"
    if resume and described.exists():
        earlier = json.loads(described.read_text())
        if earlier != noise:
            raise AdaptError(f"{run_dir}: was started on other noise ({', '.join(item['file'] for item in earlier)}); "
                             "give the same files to --resume, or start a new run")
        return noise
    folder = run_dir / "noise"
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("*.flac"):
        stale.unlink()
    for index, tape in enumerate(tapes):
        trained, _ = tape.split(held_out_share=held_out_share)
        write_audio(folder / f"{index:02d}.flac", trained, MODEL_SAMPLE_RATE, subtype="PCM_24")
    atomic_write(described, lambda temp: temp.write_text(json.dumps(noise, indent=1) + "\n"))
    return noise


def _music(run_dir: Path, *, music_dir, corpus_dir, config: AdaptConfig, stage: Callable[[str], None]) -> Path:
    """The corpus folder to train on: ``corpus_dir`` as it is, ``music_dir`` made into a corpus in the run
    folder, or the default music."""
    if corpus_dir is not None:
        if not Path(corpus_dir).is_dir():
            raise AdaptError(f"{corpus_dir}: corpus folder not found")
        return Path(corpus_dir)
    if music_dir is not None:
        if not Path(music_dir).is_dir():
            raise AdaptError(f"{music_dir}: music folder not found")
        stage(f"reading the music in {music_dir}")
        folder = run_dir / "music"
        build_corpus(folder, split="train", max_music21=0, seed=0, user_dir=music_dir, soundtracks=())
        hold_out_music(folder, origin=f"--music {music_dir}")
        return folder
    return default_music(config.default_music_pieces, stage=stage)


def default_music(pieces: int, *, stage: Callable[[str], None] = lambda line: None) -> Path:
    """A corpus of ``pieces`` Bach chorales, rendered with FluidSynth on first use into the per-user cache.

    Raises:
        AdaptError: the cache is not there yet and music21, FluidSynth or the sound font is missing.
    """
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / CACHE_FOLDER
    done = (folder / "manifest.json").exists() and len(load_manifest(folder)) >= pieces
    if not done:
        stage(f"rendering {pieces} Bach chorales into {folder} (once)")
        try:
            build_corpus(folder, split="train", max_music21=pieces, seed=0, soundtracks=())
        except CorpusError as error:
            raise AdaptError(f"no clean music to adapt with: {error}; give --music DIR (your own clean music, e.g. "
                             "CD rips) or --corpus DIR, or install music21 (pip install 'cassette-denoise[train]'), "
                             "fluidsynth and fluid-soundfont-gm") from None
        hold_out_music(folder, origin=str(folder))
    return folder


def hold_out_music(folder: Path, *, origin: str) -> None:
    """Make sure a corpus folder this module built keeps some pieces out of training: when its manifest
    marks none ``validation``, every tenth piece (at least one) becomes so, whole.

    Raises:
        AdaptError: fewer than two pieces, so none can be held out.
    """
    entries = load_manifest(folder)
    pieces = sorted({entry.params.get("piece", str(entry.path)) for entry in entries})
    if len(pieces) < 2:
        raise AdaptError(f"{origin}: {len(pieces)} usable piece(s) of music; at least 2 are needed, one to hold out "
                         "for scoring")
    if any(entry.split == "validation" for entry in entries):
        return
    held_out = set(pieces[::10])
    save_manifest(folder, [dataclasses.replace(entry, split="validation")
                           if entry.params.get("piece", str(entry.path)) in held_out else entry for entry in entries])


def held_out_pairs(corpus: Path, noises: list[np.ndarray], *, config: AdaptConfig, seed: int) -> _Pairs:
    """``score_pairs_per_snr`` pairs per input SNR: excerpts of the corpus's validation music (mono) plus
    excerpts of the held-out noise ``(channels, samples)`` (one channel, looped where short)."""
    sources = scan_sources(corpus_files(corpus, "validation"), split="validation", origin=str(corpus))
    rng = np.random.default_rng([seed, 25])
    samples = int(config.score_pair_s * MODEL_SAMPLE_RATE)
    clean, noisy, snrs = [], [], []
    for snr_db in config.score_snrs_db:
        for _ in range(config.score_pairs_per_snr):
            music = _music_excerpt(sources, samples, rng)
            excerpt = recorded_noise(noises, samples, rng)[0]
            clean.append(music)
            noisy.append(music + excerpt * np.float32(snr_gain(music, excerpt, snr_db=snr_db)))
            snrs.append(snr_db)
    return _Pairs(np.stack(clean), np.stack(noisy).astype(np.float32), np.array(snrs))


def _music_excerpt(sources: list[Source], samples: int, rng: np.random.Generator) -> np.ndarray:
    """A mono excerpt of ``samples``, drawn again (a few times) where it is nearly silent."""
    weights = np.array([source.frames for source in sources], dtype=np.float64)
    for _ in range(20):
        source = sources[rng.choice(len(sources), p=weights / weights.sum())]
        start = int(rng.integers(0, max(1, source.frames - samples)))
        music = read_excerpt(source.path, start_frame=start, frames=samples).mean(axis=0)
        if np.mean(music**2) > 1e-5:  # -50 dBFS
            break
    return music.astype(np.float32)


def blank_tape_floor(denoiser: Denoiser, tapes: list[BlankTape]) -> list[float]:
    """The noise floor an adapted model carries, ``BINS`` values in feature units: each recording's floor
    (:meth:`Denoiser.noise_floor`, the whole recording) averaged over its channels, then over the
    recordings weighted by their length."""
    floors = [denoiser.noise_floor(tape.audio, MODEL_SAMPLE_RATE).mean(dim=0).numpy() for tape in tapes]
    floor = np.average(floors, axis=0, weights=[tape.audio.shape[1] for tape in tapes])
    return [round(float(value), 6) for value in floor]


def _scores(denoiser: Denoiser, pairs: _Pairs) -> list[tuple[float, float]]:
    """``(input, output)`` mean SI-SDR per input SNR, in the order of first appearance. A model that
    carries a noise floor gets each pair's own (measured on its noise, ``noisy - clean``), as the pairs'
    noise is scaled to their SNR and the floor a user's model carries is at the level of the user's tape."""
    outputs = []
    # Unrelated pairs, eight at a time as the channels of one array (each channel gets its own mask).
    for start in range(0, len(pairs.noisy), 8):
        noisy, clean = pairs.noisy[start: start + 8], pairs.clean[start: start + 8]
        floor = (None if denoiser.carried_noise_floor is None
                 else denoiser.noise_floor(noisy - clean, MODEL_SAMPLE_RATE))
        outputs.append(denoiser.denoise(noisy, MODEL_SAMPLE_RATE, noise_floor=floor))
    outputs = np.concatenate(outputs)
    rows = []
    for snr_db in dict.fromkeys(pairs.snr_db.tolist()):
        chosen = np.flatnonzero(pairs.snr_db == snr_db)
        rows.append((float(np.mean([si_sdr(pairs.clean[i], pairs.noisy[i]) for i in chosen])),
                     float(np.mean([si_sdr(pairs.clean[i], outputs[i]) for i in chosen]))))
    return rows


def adapt_train_config(start_sidecar: dict, model_config, *, run_dir: Path, corpus_dir: Path, init_from: Path,
                       config: AdaptConfig, max_steps: int | None, max_minutes: float, threads: int, seed: int,
                       device: str) -> TrainConfig:
    """The starting model's own recipe (its sidecar's ``training.config``; the first stage's when it has
    none) turned into a fine-tune on the run's recorded noise. A teacher the recipe learnt from is left out:
    the fine-tune moves the model towards the user's noise, away from what any teacher did, and the
    teacher's file is seldom on the user's machine."""
    try:
        recipe = from_dict(start_sidecar.get("training", {}).get("config", {}))
    except (TypeError, ValueError) as error:
        log.warning("the starting model's training config is not readable (%s); the recipe's first stage is used",
                    error)
        recipe = TrainConfig()
    floor_given = config.noise_floor_given and model_config.noise_floor_input
    pairs = dataclasses.replace(recipe.pairs, recorded_noise_probability=0.0,
                                recorded_noise_alone_probability=config.recorded_noise_share,
                                recorded_noise_snr_db=config.noise_snr_db)
    return dataclasses.replace(
        recipe, corpus_dir=str(corpus_dir), run_dir=str(run_dir), noise_dir=str(run_dir / "noise"),
        init_from=str(init_from), teacher="", model=model_config, pairs=pairs, learning_rate=config.learning_rate,
        final_learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
        max_steps=max_steps or UNLIMITED_STEPS, max_minutes=max_minutes,
        validate_every_steps=config.validate_every_steps, patience_validations=UNLIMITED_STEPS,
        keep_every_validation=False, weight_average_decay=config.weight_average_decay,
        floor_from_noise_examples=recipe.batch_size if floor_given else 0, validation_floor_from_noise=floor_given,
        precision=config.precision, seed=seed, threads=threads, device=device)


def _elapsed_s(run_dir: Path, *, resume: bool) -> float:
    """Training time an earlier run of this folder already spent (the loop counts from there)."""
    state = run_dir / "state.json"
    return float(json.loads(state.read_text())["elapsed_s"]) if resume and state.exists() else 0.0


def _training_minutes(run_dir: Path, seconds: float, *, resume: bool) -> float:
    """The loop's ``max_minutes`` for ``seconds`` more of training (at least one, so a step is taken)."""
    return (_elapsed_s(run_dir, resume=resume) + max(seconds, 1.0)) / 60


def _metadata(run_dir: Path, start: Path | str, calibration: dict, noise: list[dict], state: dict,
              scores: tuple[ScoreRow, ...], corpus: Path) -> dict:
    """The adapted model's sidecar: the run's training description, the starting model's calibration, and
    what it was adapted on, with the before/after table."""
    run_sidecar = json.loads((run_dir / "best.json").read_text())
    names = ", ".join(f"{item['file']} ({item['seconds']:.1f} s)" for item in noise)
    return {
        "training": run_sidecar.get("training"),
        "validation": run_sidecar.get("validation"),
        **({"calibration": calibration} if calibration else {}),
        "adapted": {
            "from": str(start), "noise": noise, "music": str(corpus), "steps": state["step"],
            "training_seconds": round(state["elapsed_s"], 1),
            "held_out_si_sdr_db": [{"snr_db": row.snr_db, "input": round(row.input_db, 2),
                                    "before": round(row.before_db, 2), "after": round(row.after_db, 2),
                                    "gain": round(row.gain_db, 2)} for row in scores],
        },
        "training_data": f"{start} adapted with `cassette-denoise adapt` to the blank-tape noise of {names} over the "
                         f"clean music of {corpus}, with its own recipe's simulator examples besides",
    }
