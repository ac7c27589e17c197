"""JSON parsing where only strings, booleans and the presence of members are read.

orjson parses a few times faster than the standard library's json, and a request body or a
stream event is parsed on the way of every request (bench/analysis.md). Where orjson refuses
something json accepts (``NaN``, unpaired surrogate escapes, bytes that are not UTF-8), json
parses it, so that nothing a client could send is read differently. orjson returns integers past
64 bits as floats: callers that need exact numbers (a ``stream_options`` to write back, token
counts) use json itself.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["loads"]


def loads(data: bytes | bytearray | str) -> Any:
    """``json.loads(data)`` for strings, booleans, objects and arrays, in a fraction of the time."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
