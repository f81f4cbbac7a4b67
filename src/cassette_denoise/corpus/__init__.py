"""Clean music for training and testing: rendered from music21's corpus and decoded from soundtracks.

The corpus is a folder of 44.1 kHz stereo 16-bit FLAC files plus ``manifest.json``::

    DIR/train/<source>/<name>.flac     Bach chorales, Debian game soundtracks, the user's own music
    DIR/test/<source>/<name>.flac      music21 works by composers other than Bach
    DIR/manifest.json                  per file: path, split, source, duration_s, params

Where the music comes from and how it is split (:mod:`.sources`), rendered (:mod:`.render`) and levelled
(:mod:`.levels`), the manifest (:mod:`.manifest`), and the resumable build (:mod:`.build`). Everything
random (which chorales, instruments, pan, tempo, transposition, output level) is drawn from a
``numpy.random.Generator`` seeded by ``(seed, piece)`` and written to the manifest, so a piece renders
identically whether the build is fresh or resumed, and whichever other pieces were skipped.
"""

from cassette_denoise.corpus.build import CorpusManifest, build_corpus
from cassette_denoise.corpus.manifest import CorpusEntry, corpus_files, load_manifest, save_manifest
from cassette_denoise.corpus.render import DEFAULT_SOUNDFONT
from cassette_denoise.corpus.sources import SOUNDTRACKS, CorpusError, SkippedInput, Soundtrack, split_for

__all__ = [
    "DEFAULT_SOUNDFONT", "SOUNDTRACKS", "CorpusEntry", "CorpusError", "CorpusManifest", "SkippedInput", "Soundtrack",
    "build_corpus", "corpus_files", "load_manifest", "save_manifest", "split_for",
]
