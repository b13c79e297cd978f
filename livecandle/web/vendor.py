"""The page's files: ``static/`` in the package and the front-end packages npm installs
beside the project (the chart library and the socket.io client)."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi.responses import FileResponse

from livecandle.web.errors import ApiError, shown_repr

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
VENDOR = {
    "lightweight-charts.mjs": (
        "lightweight-charts/dist/lightweight-charts.standalone.production.mjs"
    ),
    "socket.io.mjs": "socket.io-client/dist/socket.io.esm.min.js",
    "socket.io.esm.min.js.map": "socket.io-client/dist/socket.io.esm.min.js.map",
}


def node_modules() -> Path:
    """The npm packages installed beside the project (``npm ci``)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / "node_modules").is_dir():
            return base / "node_modules"
    return Path(__file__).resolve().parents[2] / "node_modules"


class Vendor:
    """The front-end package files, from ``node_modules`` found once at start."""

    def __init__(self) -> None:
        self.root = node_modules()
        if not all((self.root / p).exists() for p in VENDOR.values()):
            log.warning(
                "front-end packages missing under %s: run `npm ci` (make run does)", self.root
            )

    def file(self, name: str) -> FileResponse:
        rel = VENDOR.get(name)
        if rel is None or not (self.root / rel).exists():
            raise ApiError(
                404, "name", name, f"no front-end package file {shown_repr(name)} (npm ci?)"
            )
        media = "application/json" if name.endswith(".map") else "text/javascript"
        return FileResponse(self.root / rel, media_type=media)
