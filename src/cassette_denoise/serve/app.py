"""The web app: a static page plus a small JSON/audio API over a :class:`~session.Workspace`.

Routes (ids are random; a user's file name is never part of a path):

- ``POST /api/files?name=NAME`` with the file as the raw body: streamed to the private folder, queued;
- ``GET /api/files/ID``: state and progress; ``DELETE`` forgets the file;
- ``GET /api/files/ID/before.wav`` and ``/after.wav?strength_db=&hum=&start_s=&end_s=``: what the player plays;
- ``GET /api/files/ID/spectrogram.png?which=before|after&...`` and ``/floor?...``: the pictures;
- ``GET /api/files/ID/download?strength_db=&hum=&format=``: the CLI's output for those settings.
"""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from cassette_denoise.audio import AudioError, encode_wav
from cassette_denoise.denoiser import DEFAULT_STRENGTH_DB, Denoiser
from cassette_denoise.serve import session as sessions

log = logging.getLogger(__name__)

MAX_STRENGTH_DB = 60.0
STATIC = resources.files("cassette_denoise.serve") / "static"

Strength = Query(DEFAULT_STRENGTH_DB, ge=0.0, le=MAX_STRENGTH_DB)


def create_app(denoiser: Denoiser, *, max_upload_mb: float, workers: int) -> FastAPI:
    """The app for ``denoiser`` (hum stage on); its private folder is removed when the app shuts down."""
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
    workspace = sessions.Workspace(denoiser, workers=workers)
    limit_bytes = int(max_upload_mb * 2**20)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            await asyncio.to_thread(workspace.close)

    app = FastAPI(title="cassette-denoise", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.workspace = workspace
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    def ready(file_id: str) -> sessions.FileSession:
        try:
            session = workspace.get(file_id)
        except KeyError:
            raise HTTPException(404, f"no file with id {file_id!r}") from None
        if session.state != "done":
            raise HTTPException(409, f"{session.name}: not ready ({session.state})")
        return session

    async def in_pool(pool, function, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: function(*args, **kwargs))

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8")

    @app.get("/api/config")
    async def config() -> dict:
        return {"max_upload_mb": max_upload_mb, "default_strength_db": DEFAULT_STRENGTH_DB,
                "max_strength_db": MAX_STRENGTH_DB, "workers": workers,
                "export_formats": ["original", *sessions.EXPORT_FORMATS]}

    @app.post("/api/files")
    async def upload(request: Request, name: str = Query(..., min_length=1, max_length=255)) -> dict:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit_bytes:
            raise HTTPException(413, _too_large(name, int(declared), max_upload_mb))
        session = workspace.new_file(name)
        size = 0
        try:
            with open(session.input_path, "wb") as handle:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit_bytes:
                        raise HTTPException(413, _too_large(name, size, max_upload_mb))
                    handle.write(chunk)
        except (HTTPException, ClientDisconnect, OSError):
            workspace.discard(session)
            raise
        if size == 0:
            workspace.discard(session)
            raise HTTPException(400, f"{name}: empty file")
        workspace.start_analysis(session)
        return session.summary()

    @app.get("/api/files/{file_id}")
    async def status(file_id: str) -> dict:
        try:
            return workspace.get(file_id).summary()
        except KeyError:
            raise HTTPException(404, f"no file with id {file_id!r}") from None

    @app.delete("/api/files/{file_id}")
    async def forget(file_id: str) -> dict:
        try:
            workspace.discard(workspace.get(file_id))
        except KeyError:
            raise HTTPException(404, f"no file with id {file_id!r}") from None
        return {"id": file_id, "state": "deleted"}

    @app.get("/api/files/{file_id}/before.wav")
    async def before(file_id: str) -> FileResponse:
        return FileResponse(ready(file_id).before_path, media_type="audio/wav")

    @app.get("/api/files/{file_id}/after.wav")
    async def after(file_id: str, strength_db: float = Strength, hum: bool = True,
                    start_s: float = Query(0.0, ge=0.0), end_s: float = Query(1e9, ge=0.0)) -> Response:
        session = ready(file_id)
        audio = await in_pool(workspace.render_pool, sessions.render_range, session, strength_db=strength_db,
                              remove_hum=hum, start_s=start_s, end_s=end_s)
        return Response(encode_wav(audio, session.info.sample_rate), media_type="audio/wav")

    @app.get("/api/files/{file_id}/spectrogram.png")
    async def spectrogram(file_id: str, which: str = Query(..., pattern="^(before|after)$"),
                          strength_db: float = Strength, hum: bool = True,
                          start_s: float = Query(0.0, ge=0.0), end_s: float = Query(1e9, ge=0.0)) -> Response:
        session = ready(file_id)
        png = await in_pool(workspace.render_pool, sessions.spectrogram, session, which=which,
                            strength_db=strength_db, remove_hum=hum, start_s=start_s, end_s=end_s)
        return Response(png, media_type="image/png")

    @app.get("/api/files/{file_id}/floor")
    async def floor(file_id: str, strength_db: float = Strength, hum: bool = True) -> dict:
        session = ready(file_id)
        return await in_pool(workspace.render_pool, sessions.noise_floor, session, strength_db=strength_db,
                             remove_hum=hum)

    @app.get("/api/files/{file_id}/download")
    async def download(file_id: str, strength_db: float = Strength, hum: bool = True,
                       format: str = "original") -> FileResponse:
        session = ready(file_id)
        try:
            path = await in_pool(workspace.denoise_pool, sessions.export, session, workspace.denoisers[hum],
                                 strength_db=strength_db, format=format)
        except ValueError as error:
            raise HTTPException(400, session.user_message(error)) from None
        except AudioError as error:
            raise HTTPException(500, session.user_message(error)) from None
        return FileResponse(path, filename=download_name(session.name, path.suffix),
                            background=BackgroundTask(path.unlink, missing_ok=True))

    return app


def download_name(name: str, suffix: str) -> str:
    """``NAME-denoised.SUFFIX`` from a user's file name, reduced to characters safe in any file system."""
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._")[:80] or "audio"
    return f"{stem}-denoised{suffix}"


def _too_large(name: str, size_bytes: int, max_upload_mb: float) -> str:
    return f"{name}: {size_bytes / 2**20:.1f} MB is over the upload limit of {max_upload_mb:g} MB (--max-upload-mb)"
