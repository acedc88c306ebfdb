"""multipart/related (RFC 2387) bodies: written as a stream, read as a stream.

Responses are generated part by part, so a study of thousands of instances leaves the
server without being held in memory. Requests (STOW-RS) are parsed from the incoming
byte stream straight into one spool file per part; at most one chunk plus one
boundary length is held in memory, whatever the part sizes.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from jip.errors import Invalid, TooLarge

_MAX_HEADER_BYTES = 16 * 1024


def new_boundary() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Part:
    """One outgoing part: its Content-Type and its body as chunks."""

    content_type: str
    body: Iterable[bytes]
    content_location: str | None = None


def related_content_type(part_type: str, boundary: str, **params: str) -> str:
    """``multipart/related; type="…"; boundary=…`` for a response."""
    extra = "".join(f"; {name.replace('_', '-')}={value}" for name, value in params.items())
    return f'multipart/related; type="{part_type}"{extra}; boundary={boundary}'


def write_parts(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related message, one chunk at a time."""
    delimiter = f"--{boundary}\r\n".encode()
    for part in parts:
        headers = f"Content-Type: {part.content_type}\r\n"
        if part.content_location:
            headers += f"Content-Location: {part.content_location}\r\n"
        yield delimiter + headers.encode() + b"\r\n"
        yield from part.body
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def file_chunks(handle: BinaryIO, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """Stream ``handle`` and close it at the end (or when the consumer stops)."""
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def boundary_of(content_type: str) -> tuple[str, dict[str, str]]:
    """The boundary and the parameters of a multipart Content-Type header."""
    media_type, *raw = content_type.split(";")
    params: dict[str, str] = {}
    for item in raw:
        name, _, value = item.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    boundary = params.get("boundary")
    if media_type.strip().lower() != "multipart/related" or not boundary:
        raise Invalid("request body must be multipart/related with a boundary")
    if len(boundary) > 70:
        raise Invalid("multipart boundary is longer than 70 characters (RFC 2046)")
    return boundary, params


@dataclass(frozen=True)
class ReceivedPart:
    """One incoming part, spooled to ``path``."""

    index: int  # 1-based position in the request
    headers: dict[str, str]  # lower-case names
    path: Path
    size: int

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class _Limit:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.seen = 0

    def add(self, count: int) -> None:
        self.seen += count
        if self.seen > self.max_bytes:
            raise TooLarge(f"request body exceeds the limit of {self.max_bytes} bytes")


async def read_parts(
    chunks: AsyncIterator[bytes],
    boundary: str,
    spool_dir: Path,
    max_bytes: int,
    max_parts: int | None = None,
) -> list[ReceivedPart]:
    """Spool each part of a multipart/related body into ``spool_dir``.

    Raises :class:`Invalid` for a malformed or truncated body (no closing delimiter)
    and :class:`TooLarge` past ``max_bytes`` or ``max_parts`` (None: no limit, for
    responses of our own server); the caller removes ``spool_dir``.
    """
    reader = _Reader(chunks, _Limit(max_bytes))
    delimiter = b"--" + boundary.encode()
    await reader.skip_preamble(delimiter)
    parts: list[ReceivedPart] = []
    while True:
        if await reader.at_close():
            return parts
        if max_parts is not None and len(parts) >= max_parts:
            raise TooLarge(
                f"STOW-RS request holds more than {max_parts} parts "
                "(store.dicomweb.max_stow_parts): send the instances in several requests"
            )
        headers = await reader.headers()
        fd, name = tempfile.mkstemp(dir=spool_dir, suffix=".part")
        with os.fdopen(fd, "wb") as out:
            size = await reader.body_until(b"\r\n" + delimiter, out)
        parts.append(ReceivedPart(len(parts) + 1, headers, Path(name), size))


class _Reader:
    """A buffered view of the request stream with the few reads multipart needs."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: _Limit) -> None:
        self.chunks = chunks
        self.limit = limit
        self.buffer = bytearray()
        self.done = False

    async def _more(self) -> bool:
        if self.done:
            return False
        try:
            chunk = await self.chunks.__anext__()
        except StopAsyncIteration:
            self.done = True
            return False
        self.limit.add(len(chunk))
        self.buffer += chunk
        return True

    async def skip_preamble(self, delimiter: bytes) -> None:
        start = 0
        while True:
            at = self.buffer.find(delimiter, start)
            if at == 0 or (at > 0 and self.buffer[at - 2 : at] == b"\r\n"):
                del self.buffer[: at + len(delimiter)]
                return
            if at > 0:  # the boundary text inside a preamble line: look further
                start = at + 1
                continue
            if len(self.buffer) > _MAX_HEADER_BYTES:
                del self.buffer[: -(len(delimiter) + 2)]
                start = 0
            if not await self._more():
                raise Invalid("request body holds no multipart boundary")

    async def at_close(self) -> bool:
        """After a delimiter: ``--`` closes the body, else skip padding up to CRLF."""
        while len(self.buffer) < 2 and await self._more():
            pass
        if self.buffer[:2] == b"--":
            return True
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > _MAX_HEADER_BYTES or not await self._more():
                raise Invalid("multipart body ends inside a boundary line")
        del self.buffer[: end + 2]
        return False

    async def headers(self) -> dict[str, str]:
        while True:
            if self.buffer[:2] == b"\r\n":  # a part without headers
                del self.buffer[:2]
                return {}
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buffer) > _MAX_HEADER_BYTES:
                raise Invalid("multipart part headers are longer than 16 KiB")
            if not await self._more():
                raise Invalid("multipart body ends inside part headers")
        block = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        headers: dict[str, str] = {}
        for line in block.split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise Invalid(f"malformed multipart part header {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        return headers

    async def body_until(self, delimiter: bytes, out: BinaryIO) -> int:
        """Copy bytes to ``out`` up to ``delimiter`` (consumed); return the count."""
        written = 0
        keep = len(delimiter) - 1
        while True:
            at = self.buffer.find(delimiter)
            if at >= 0:
                out.write(self.buffer[:at])
                del self.buffer[: at + len(delimiter)]
                return written + at
            if len(self.buffer) > keep:
                flush = len(self.buffer) - keep
                out.write(self.buffer[:flush])
                del self.buffer[:flush]
                written += flush
            if not await self._more():
                raise Invalid("multipart body ends before its closing boundary (truncated?)")
