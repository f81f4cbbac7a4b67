"""The web app: a static page plus a small JSON/audio API over a :class:`~tracks.Workspace`.

Routes (ids are random; a user's file name is never part of a path):

- ``POST /api/files?name=NAME`` with the file as the raw body: streamed to the private folder, queued;
- ``GET /api/files/ID``: state and progress; ``DELETE`` forgets the file;
- ``GET /api/files/ID/before.wav`` and ``/after.wav?strength_db=&hum=&start_s=&end_s=``: what the player plays;
- ``GET /api/files/ID/spectrogram.png?which=before|after&...`` and ``/floor?...``: the pictures;
- ``GET /api/files/ID/download?strength_db=&hum=&format=``: the CLI's output for those settings.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from cassette_denoise.audio import AudioError, encode_wav
from cassette_denoise.denoiser import DEFAULT_STRENGTH_DB, Denoiser
from cassette_denoise.serve import tracks


MAX_STRENGTH_DB = 60.0
STATIC = resources.files("cassette_denoise.serve") / "static"

Strength = Query(DEFAULT_STRENGTH_DB, ge=0.0, le=MAX_STRENGTH_DB)


@dataclass(frozen=True)
class Limits:
    max_upload_mb: float
    workers: int


def create_app(denoiser: Denoiser, *, max_upload_mb: float, workers: int) -> FastAPI:
    """The app for ``denoiser`` (hum stage on); its private folder is removed when the app shuts down."""
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
    workspace = tracks.Workspace(denoiser, workers=workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            await asyncio.to_thread(workspace.close)

    app = FastAPI(title="cassette-denoise", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.workspace = workspace
    app.state.limits = Limits(max_upload_mb, workers)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.include_router(router)
    return app


router = APIRouter()


def _workspace(request: Request) -> tracks.Workspace:
    return request.app.state.workspace


def _file(request: Request, file_id: str) -> tracks.Track:
    try:
        return _workspace(request).get(file_id)
    except KeyError:
        raise HTTPException(404, f"no file with id {file_id!r}") from None


def _ready(request: Request, file_id: str) -> tracks.Track:
    track = _file(request, file_id)
    if track.state != "done":
        raise HTTPException(409, f"{track.name}: not ready ({track.state})")
    return track


async def _in_pool(pool, function, *args, **kwargs):
    return await asyncio.get_running_loop().run_in_executor(pool, lambda: function(*args, **kwargs))


@router.get("/", include_in_schema=False)
async def index() -> Response:
    return Response((STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8")


@router.get("/api/config")
async def config(request: Request) -> dict:
    limits = request.app.state.limits
    return {"max_upload_mb": limits.max_upload_mb, "default_strength_db": DEFAULT_STRENGTH_DB,
            "max_strength_db": MAX_STRENGTH_DB, "workers": limits.workers,
            "export_formats": ["original", *tracks.EXPORT_FORMATS]}


@router.post("/api/files")
async def upload(request: Request, name: str = Query(..., min_length=1, max_length=255)) -> dict:
    """The raw body is the file: streamed to the private folder, counted against the limit as it comes."""
    max_upload_mb = request.app.state.limits.max_upload_mb
    limit_bytes = int(max_upload_mb * 2**20)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise HTTPException(413, _too_large(name, int(declared), max_upload_mb))
    workspace = _workspace(request)
    track = workspace.new_file(name)
    size = 0
    try:
        with open(track.input_path, "wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit_bytes:
                    raise HTTPException(413, _too_large(name, size, max_upload_mb))
                handle.write(chunk)
    except (HTTPException, ClientDisconnect, OSError):
        workspace.discard(track)
        raise
    if size == 0:
        workspace.discard(track)
        raise HTTPException(400, f"{name}: empty file")
    workspace.start_analysis(track)
    return track.summary()


@router.get("/api/files/{file_id}")
async def status(request: Request, file_id: str) -> dict:
    return _file(request, file_id).summary()


@router.delete("/api/files/{file_id}")
async def forget(request: Request, file_id: str) -> dict:
    _workspace(request).discard(_file(request, file_id))
    return {"id": file_id, "state": "deleted"}


@router.get("/api/files/{file_id}/before.wav")
async def before(request: Request, file_id: str) -> FileResponse:
    return FileResponse(_ready(request, file_id).before_path, media_type="audio/wav")


@router.get("/api/files/{file_id}/after.wav")
async def after(request: Request, file_id: str, strength_db: float = Strength, hum: bool = True,
                start_s: float = Query(0.0, ge=0.0), end_s: float = Query(1e9, ge=0.0)) -> Response:
    track = _ready(request, file_id)
    pool, job = _workspace(request).render_job(track, strength_db=strength_db, remove_hum=hum,
                                               start_s=start_s, end_s=end_s)
    try:
        audio = await _in_pool(pool, job)
    except tracks.Superseded as error:
        raise HTTPException(409, str(error)) from None
    return Response(encode_wav(audio, track.info.sample_rate), media_type="audio/wav")


@router.get("/api/files/{file_id}/spectrogram.png")
async def spectrogram(request: Request, file_id: str, which: str = Query(..., pattern="^(before|after)$"),
                      strength_db: float = Strength, hum: bool = True,
                      start_s: float = Query(0.0, ge=0.0), end_s: float = Query(1e9, ge=0.0)) -> Response:
    track = _ready(request, file_id)
    png = await _in_pool(_workspace(request).render_pool, tracks.spectrogram, track, which=which,
                         strength_db=strength_db, remove_hum=hum, start_s=start_s, end_s=end_s)
    return Response(png, media_type="image/png")


@router.get("/api/files/{file_id}/floor")
async def floor(request: Request, file_id: str, strength_db: float = Strength, hum: bool = True) -> dict:
    track = _ready(request, file_id)
    return await _in_pool(_workspace(request).render_pool, tracks.noise_floor, track,
                          strength_db=strength_db, remove_hum=hum)


@router.get("/api/files/{file_id}/download")
async def download(request: Request, file_id: str, strength_db: float = Strength, hum: bool = True,
                   format: str = "original") -> FileResponse:
    """The CLI's output for these settings; runs in the denoise queue like any other denoise."""
    track = _ready(request, file_id)
    workspace = _workspace(request)
    try:
        path = await _in_pool(workspace.denoise_pool, tracks.export, track, workspace.denoisers[hum],
                              strength_db=strength_db, format=format)
    except ValueError as error:
        raise HTTPException(400, track.user_message(error)) from None
    except AudioError as error:
        raise HTTPException(500, track.user_message(error)) from None
    return FileResponse(path, filename=download_name(track.name, path.suffix),
                        background=BackgroundTask(path.unlink, missing_ok=True))


def download_name(name: str, suffix: str) -> str:
    """``NAME-denoised.SUFFIX`` from a user's file name, reduced to characters safe in any file system."""
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._")[:80] or "audio"
    return f"{stem}-denoised{suffix}"


def _too_large(name: str, size_bytes: int, max_upload_mb: float) -> str:
    return f"{name}: {size_bytes / 2**20:.1f} MB is over the upload limit of {max_upload_mb:g} MB (--max-upload-mb)"
