"""cassette-denoise: remove compact-cassette noise from digitised tapes while leaving the music untouched."""

__version__ = "0.1.0"

from cassette_denoise.audio import AudioError  # noqa: E402

__all__ = ["AudioError", "Denoiser", "__version__"]


def __getattr__(name):
    # Import the torch-backed Denoiser lazily so light commands (simulate, evaluate) start fast.
    if name == "Denoiser":
        from cassette_denoise.denoiser import Denoiser

        return Denoiser
    raise AttributeError(name)
