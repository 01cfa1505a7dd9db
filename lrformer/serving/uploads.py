"""Receiving an upload: the raw request body, or the ``image`` field of a ``multipart/form-data``
form parsed as it streams in (python-multipart), within a size and a time limit.

The event loop only moves bytes: every chunk of a form is parsed on a worker thread, and a form
with more than ``max_parts`` parts, a part header above 4 KB or more than 8 header lines is refused
as soon as the parser meets it, so a body of thousands of tiny parts costs a few parsed parts, not
seconds of a frozen server. Nothing goes to disk.
"""

from __future__ import annotations

import asyncio
from email.message import Message

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from ..errors import ClientGoneError, InputError, UploadTimeoutError, UploadTooLargeError

MULTIPART_SLACK = 64 << 10
"""Bytes a multipart body may hold beyond the image (boundaries and part headers)."""


class FormImage:
    """A streaming parser of a ``multipart/form-data`` body that keeps only the ``image`` part.

    Feed the body with :meth:`write` (on a worker thread: parsing is CPU work), then :meth:`image`.
    Raises :class:`~lrformer.errors.InputError` (400) on a malformed form, more than ``max_parts``
    parts, or oversized part headers, and :class:`~lrformer.errors.UploadTooLargeError` when the
    image part passes ``limit`` bytes.
    """

    def __init__(self, content_type: str, limit: int, max_parts: int) -> None:
        from python_multipart.multipart import MultipartParser

        boundary = _boundary(content_type)
        self.limit, self.max_parts = limit, max_parts
        self.parts, self.found = 0, False
        self._chunks: list[bytes] = []
        self._size = 0
        self._header: list[bytes] = []  # the current part's header line being read
        self._disposition = b""
        self._in_image = False
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_bytes,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
        }
        self._parser = MultipartParser(boundary, callbacks, max_header_count=8, max_header_size=4096)

    def write(self, chunk: bytes) -> None:
        """Parse the next ``chunk`` of the body."""
        from python_multipart.exceptions import FormParserError

        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise InputError(f"the multipart form is malformed ({str(exc)[:120]}): send the image as a raw "
                             "body or a well-formed form with a field 'image'") from None  # fmt: skip

    def image(self) -> bytes | None:
        """The ``image`` field's bytes, ``None`` when the form has none."""
        self._parser.finalize()
        return b"".join(self._chunks) if self.found else None

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise InputError(f"the multipart form has more than {self.max_parts} parts: send only the field 'image'")
        self._in_image, self._disposition = False, b""

    def _header_bytes(self, data: bytes, start: int, end: int) -> None:
        self._header.append(data[start:end])

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header.append(b"\0" + data[start:end])

    def _header_end(self) -> None:
        line = b"".join(self._header)
        self._header = []
        name, _, value = line.partition(b"\0")
        if name.strip().lower() == b"content-disposition":
            self._disposition = value.replace(b"\0", b"")

    def _headers_finished(self) -> None:
        message = Message()
        message["content-disposition"] = self._disposition.decode("latin-1")
        if message.get_param("name", header="content-disposition") == "image" and not self.found:
            self._in_image = self.found = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_image:
            return
        self._size += end - start
        if self._size > self.limit:
            raise UploadTooLargeError(f"the upload is above the limit of {self.limit / 2**20:.0f} MB (--max-upload-mb)")
        self._chunks.append(data[start:end])


def _boundary(content_type: str) -> bytes:
    message = Message()
    message["content-type"] = content_type
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 200:
        raise InputError("the multipart form has no boundary in its Content-Type: let the client library build the "
                         "form, or send the image as a raw body")  # fmt: skip
    return boundary.encode("latin-1")


def _too_large(limit: int) -> UploadTooLargeError:
    return UploadTooLargeError(f"the upload is above the limit of {limit / 2**20:.0f} MB (--max-upload-mb)")


async def _receive(request: Request, limit: int, max_parts: int) -> bytes:
    content_type = request.headers.get("content-type", "")
    multipart = content_type.lower().startswith("multipart/form-data")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + (MULTIPART_SLACK if multipart else 0):
        raise _too_large(limit)
    form = FormImage(content_type, limit, max_parts) if multipart else None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + (MULTIPART_SLACK if multipart else 0):
            raise _too_large(limit)
        if form is None:
            chunks.append(chunk)
        elif chunk:
            await run_in_threadpool(form.write, chunk)
    if form is None:
        return b"".join(chunks)
    data = await run_in_threadpool(form.image)
    if data is None:
        raise InputError("the multipart form has no field 'image': send the image file as the field 'image'")
    return data


async def read_upload(request: Request, limit: int, timeout_s: float = 30.0, max_parts: int = 8) -> bytes:
    """The image bytes of a raw body or of a multipart form's ``image`` field, at most ``limit``,
    arrived within ``timeout_s``. Raises :class:`~lrformer.errors.UploadTooLargeError`,
    :class:`~lrformer.errors.UploadTimeoutError`, :class:`~lrformer.errors.InputError`, or
    :class:`~lrformer.errors.ClientGoneError` when the client disconnects mid-upload."""
    try:
        data = await asyncio.wait_for(_receive(request, limit, max_parts), timeout_s)
    except asyncio.TimeoutError:
        raise UploadTimeoutError(f"the upload did not arrive within {timeout_s:g} s: send it faster, or in one "
                                 "piece") from None  # fmt: skip
    except ClientDisconnect:
        raise ClientGoneError("the client disconnected during the upload") from None
    if not data:
        raise InputError("the upload is empty: send the image file as the request body or the form field 'image'")
    return data
