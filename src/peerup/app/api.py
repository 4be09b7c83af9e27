"""The daemon's local API: HTTP/1.1 + JSON on a Unix socket, with a Bearer cookie.

The socket file is mode 0600 and the cookie (32 random bytes, hex) is rewritten at
every daemon start in a 0600 file beside it, so only the owning user can talk to the
daemon. The server and the client live in this one module so they cannot drift apart.
HTTP is written by hand here because the API is a dozen small JSON requests on a local
socket; an HTTP framework would be the largest dependency in the project.
Routes (all JSON): GET /v1/status, GET /v1/doctor, GET /v1/peers, GET /v1/services,
GET /v1/auth, POST /v1/auth {peer_id, comment}, DELETE /v1/auth/<peer>, GET /v1/names,
POST /v1/connect {peer, service, port, bind}, GET /v1/proxies,
DELETE /v1/connect/<id>, POST /v1/ping {peer, count}, POST /v1/traceroute {peer},
POST /v1/disconnect {peer}, POST /v1/reload, POST /v1/shutdown.
Pipe routes take the connection over after the request: POST /v1/pipe {peer,
service} carries the socket's bytes to a remote service (``proxy --stdio``); the
answer is ``200`` followed by the service's bytes, or a JSON error if the service
could not be reached (the client may send its bytes right behind the request).
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
PipeRoute = Callable[[Json, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
"""Gets the connection after the request; writes its own answer (see write_answer)."""


def write_answer(writer: asyncio.StreamWriter, status: HTTPStatus, body: Json) -> None:
    """An HTTP answer with a JSON body, the connection to be closed after it."""
    raw = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + raw)


UPGRADE_HEAD: Final = b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nUpgrade: peerup-pipe\r\n\r\n"
"""A pipe route's answer when the remote service is reached: raw bytes follow."""


class ApiServer:
    """Serves routes on a Unix socket; each route gets (body, path args) → JSON."""

    def __init__(self, socket_path: Path, cookie_path: Path) -> None:
        self.socket_path = socket_path
        self.cookie_path = cookie_path
        self.routes: dict[tuple[str, str], Route] = {}
        self.pipe_routes: dict[tuple[str, str], PipeRoute] = {}
        self._server: asyncio.Server | None = None
        self._cookie = ""

    def route(self, method: str, prefix: str, handler: Route) -> None:
        self.routes[(method, prefix)] = handler

    def pipe_route(self, method: str, path: str, handler: PipeRoute) -> None:
        self.pipe_routes[(method, path)] = handler

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
            answer = await self._dispatch(reader, writer)
        except (
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            answer = HTTPStatus.BAD_REQUEST, {"error": f"bad request: {exc}"}
        with contextlib.suppress(ConnectionError):
            if answer is not None:
                write_answer(writer, *answer)
                await writer.drain()
            writer.close()

    async def _dispatch(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[HTTPStatus, Json] | None:
        """Serve one request: the answer to write, or None when a pipe route took
        the connection over (and answered itself)."""
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
        pipe = self.pipe_routes.get((method, path))
        if pipe is not None:
            await pipe(body, reader, writer)
            return None
        for (m, prefix), handler in self.routes.items():
            if m == method and (path == prefix or path.startswith(prefix + "/")):
                args = [a for a in path[len(prefix) :].split("/") if a]
                try:
                    return HTTPStatus.OK, await handler(body, args)
                except (Error, ValueError, TypeError, KeyError) as exc:
                    answer: Json = {"error": str(exc)}
                    hint = getattr(exc, "hint", None)
                    if isinstance(hint, str):
                        answer["hint"] = hint
                    return HTTPStatus.UNPROCESSABLE_ENTITY, answer
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

    def _request(self, method: str, path: str, body: Json | None) -> bytes:
        try:
            cookie = files.read_private(self.cookie_path).decode().strip()
        except (ConfigError, OSError) as exc:
            raise ApiError(f"cannot read the daemon cookie: {exc}") from None
        raw = json.dumps(body or {}).encode()
        return (
            f"{method} {path} HTTP/1.1\r\nHost: peerup\r\nAuthorization: Bearer {cookie}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
        ).encode() + raw

    async def open_pipe(
        self, path: str, body: Json
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Send a pipe route's request; the caller may write its bytes right away
        and then reads the answer (:func:`read_pipe_answer`)."""
        request = self._request("POST", path, body)
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError as exc:
            raise ApiError(
                f"daemon not reachable at {self.socket_path}: {exc}"
            ) from None
        writer.write(request)
        return reader, writer

    def call(self, method: str, path: str, body: Json | None = None) -> Json:
        """One request; raises ApiError with the daemon's message on failure."""
        request = self._request(method, path, body)
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
            hint = data.get("hint") if isinstance(data, dict) else None
            raise ApiError(
                str(data.get("error", f"HTTP {status}")),
                hint=hint if isinstance(hint, str) else None,
            )
        if not isinstance(data, dict):
            raise ApiError("malformed answer from the daemon")
        return data


async def read_pipe_answer(reader: asyncio.StreamReader) -> None:
    """Read a pipe route's answer head: returns when the raw bytes begin.

    Raises:
        ApiError: the daemon answered with an error (its message and hint).
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError, ValueError):
        raise ApiError("the daemon closed the pipe without an answer") from None
    if status == 200:
        return
    try:
        data = json.loads(await reader.read(MAX_BODY_BYTES))
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    hint = data.get("hint")
    raise ApiError(
        str(data.get("error", f"HTTP {status}")),
        hint=hint if isinstance(hint, str) else None,
    )
