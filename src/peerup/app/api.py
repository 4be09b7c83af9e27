"""The daemon's local API: HTTP/1.1 + JSON on a Unix socket, with a Bearer cookie.

The socket file is mode 0600 and the cookie (32 random bytes, hex) is rewritten at
every daemon start in a 0600 file beside it, so only the owning user can talk to the
daemon. The server and the client live in this one module so they cannot drift apart.
HTTP is written by hand here because the API is a dozen small JSON requests on a local
socket; an HTTP framework would be the largest dependency in the project.
Routes (all JSON): GET /v1/status, GET /v1/peers, GET /v1/services, GET /v1/auth,
POST /v1/auth {peer_id, comment}, DELETE /v1/auth/<peer>, GET /v1/names,
POST /v1/connect {peer, service, port, bind}, GET /v1/proxies,
DELETE /v1/connect/<id>, POST /v1/ping {peer, count}, POST /v1/traceroute {peer},
POST /v1/disconnect {peer}, POST /v1/reload, POST /v1/shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final

from peerup.config import files
from peerup.core.errors import ApiError, ConfigError, Error

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1024 * 1024
Json = dict[str, Any]
Route = Callable[[Json, list[str]], Awaitable[Json]]


class ApiServer:
    """Serves routes on a Unix socket; each route gets (body, path args) → JSON."""

    def __init__(self, socket_path: Path, cookie_path: Path) -> None:
        self.socket_path = socket_path
        self.cookie_path = cookie_path
        self.routes: dict[tuple[str, str], Route] = {}
        self._server: asyncio.Server | None = None
        self._cookie = ""

    def route(self, method: str, prefix: str, handler: Route) -> None:
        self.routes[(method, prefix)] = handler

    async def start(self) -> None:
        self._cookie = os.urandom(32).hex()
        files.write_atomic(self.cookie_path, self._cookie + "\n")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, str(self.socket_path)
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for path in (self.socket_path, self.cookie_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            status, body = await self._dispatch(reader)
        except (
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            status, body = HTTPStatus.BAD_REQUEST, {"error": f"bad request: {exc}"}
        raw = json.dumps(body).encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + raw)
            await writer.drain()
            writer.close()

    async def _dispatch(self, reader: asyncio.StreamReader) -> tuple[HTTPStatus, Json]:
        request = (await reader.readline()).decode("latin-1").split()
        if len(request) != 3:
            raise ValueError("malformed request line")
        method, path, _ = request
        headers: dict[str, str] = {}
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY_BYTES:
            raise ValueError("body too large")
        raw = await reader.readexactly(length) if length else b"{}"
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(token.encode(), self._cookie.encode()):
            return HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong cookie"}
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        for (m, prefix), handler in self.routes.items():
            if m == method and (path == prefix or path.startswith(prefix + "/")):
                args = [a for a in path[len(prefix) :].split("/") if a]
                try:
                    return HTTPStatus.OK, await handler(body, args)
                except (Error, ValueError, TypeError, KeyError) as exc:
                    return HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(exc)}
        return HTTPStatus.NOT_FOUND, {"error": f"no route {method} {path}"}


class ApiClient:
    """Blocking client used by the CLI."""

    def __init__(
        self, socket_path: Path, cookie_path: Path, timeout_s: float = 30.0
    ) -> None:
        self.socket_path = socket_path
        self.cookie_path = cookie_path
        self.timeout_s = timeout_s

    def is_running(self) -> bool:
        """Whether a daemon answers on the socket."""
        if not self.socket_path.exists() or not self.cookie_path.exists():
            return False
        try:
            self.call("GET", "/v1/status")
        except ApiError:
            return False
        return True

    def call(self, method: str, path: str, body: Json | None = None) -> Json:
        """One request; raises ApiError with the daemon's message on failure."""
        try:
            cookie = files.read_private(self.cookie_path).decode().strip()
        except (ConfigError, OSError) as exc:
            raise ApiError(f"cannot read the daemon cookie: {exc}") from None
        raw = json.dumps(body or {}).encode()
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: peerup\r\nAuthorization: Bearer {cookie}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
        ).encode() + raw
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(str(self.socket_path))
                sock.sendall(request)
                chunks = []
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError as exc:
            raise ApiError(
                f"daemon not reachable at {self.socket_path}: {exc}"
            ) from None
        head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
            data = json.loads(payload)
        except (IndexError, ValueError):
            raise ApiError("malformed answer from the daemon") from None
        if status != 200:
            raise ApiError(str(data.get("error", f"HTTP {status}")))
        if not isinstance(data, dict):
            raise ApiError("malformed answer from the daemon")
        return data
