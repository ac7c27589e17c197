"""Content codings: which ones the upstream may use, and decoding a copy of a body for metering.

Bodies reach clients exactly as the upstream sent them, compressed or not. To read ``usage`` out of
a compressed body the proxy decodes a copy, so it only lets the upstream use codings it can decode:
``gzip`` and ``deflate`` (zlib), the ones the client accepts too. A client that only offers ``br``
or ``zstd`` gets an uncompressed body, which it always accepts.
"""

from __future__ import annotations

import functools
import zlib
from typing import Final

__all__ = ["Decoder", "decoder_for", "upstream_accept_encoding"]

IDENTITY: Final = "identity"
_DECODABLE: Final = ("gzip", "deflate")


@functools.lru_cache(maxsize=256)
def upstream_accept_encoding(client_value: str | None) -> str:
    """The ``Accept-Encoding`` to send upstream for a client that sent ``client_value``.

    Cached: clients send the same few values over and over.
    """
    if not client_value:
        return IDENTITY
    accepted: list[str] = []
    wildcard = False
    for item in client_value.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if _q_is_zero(params):
            continue
        if coding == "*":
            wildcard = True
        elif coding in _DECODABLE and coding not in accepted:
            accepted.append(coding)
    if wildcard:
        accepted.extend(coding for coding in _DECODABLE if coding not in accepted)
    return ", ".join(accepted) if accepted else IDENTITY


def _q_is_zero(params: str) -> bool:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip()) == 0.0
            except ValueError:
                return False
    return False


class Decoder:
    """Incremental decoder of one body; after a decoding error it yields nothing more."""

    __slots__ = ("_inflater", "_may_be_raw", "failed")

    def __init__(self, coding: str) -> None:
        # wbits 32+15 accepts both a gzip and a zlib header.
        self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 32) if coding != IDENTITY else None
        # Some servers send "deflate" without the zlib header the RFC asks for.
        self._may_be_raw = coding == "deflate"
        self.failed = False

    def decode(self, chunk: bytes) -> bytes:
        if self.failed:
            return b""
        if self._inflater is None:
            return chunk
        try:
            decoded = self._inflater.decompress(chunk)
        except zlib.error:
            decoded = self._retry_as_raw_deflate(chunk)
        self._may_be_raw = False
        return decoded

    def _retry_as_raw_deflate(self, chunk: bytes) -> bytes:
        if self._may_be_raw:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                return self._inflater.decompress(chunk)
            except zlib.error:
                pass
        self.failed = True
        return b""


def decoder_for(content_encoding: str | None) -> Decoder | None:
    """A decoder for the response's ``Content-Encoding``, or None when we cannot decode it."""
    coding = (content_encoding or IDENTITY).strip().lower()
    if coding in (IDENTITY, ""):
        return Decoder(IDENTITY)
    if coding in _DECODABLE:
        return Decoder(coding)
    return None
