"""cassette-denoise: remove compact-cassette noise from digitised tapes while leaving the music untouched."""

__version__ = "0.1.0"

__all__ = ["AudioError", "Denoiser", "__version__"]


def __getattr__(name):
    # Import lazily: `import cassette_denoise` (and so `cassette-denoise --help`) must not load numpy,
    # soundfile or torch; the first use of a name pays for its module.
    if name == "AudioError":
        from cassette_denoise.audio import AudioError

        return AudioError
    if name == "Denoiser":
        from cassette_denoise.denoiser import Denoiser

        return Denoiser
    raise AttributeError(f"module 'cassette_denoise' has no attribute {name!r}")
