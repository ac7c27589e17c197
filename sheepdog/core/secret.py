"""A value that must never be printed: keys, tokens, passwords, URLs that carry a key."""

from __future__ import annotations

import hmac
from typing import Any, Final

from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

REDACTED: Final = "<secret>"


class Secret:
    """Holds a secret string; ``str()`` and ``repr()`` print ``<secret>``.

    Use :meth:`reveal` at the single place where the value is really needed (an HTTP header, an
    SMTP login), and :meth:`matches` to compare a presented credential in constant time.
    """

    __slots__ = ("_encoded", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._encoded = value.encode("utf-8")

    def reveal(self) -> str:
        """The secret itself: only for sending it where it belongs."""
        return self._value

    def matches(self, presented: str | bytes) -> bool:
        """Constant-time comparison with a credential a client presented."""
        if isinstance(presented, str):
            presented = presented.encode("utf-8", "surrogateescape")
        return hmac.compare_digest(self._encoded, presented)

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._encoded, other._encoded)

    def __hash__(self) -> int:
        return hash(self._encoded)

    @classmethod
    def validate(cls, value: Any) -> Secret:
        """A config value as a secret: a non-empty string (or a number YAML read from one).

        Errors say what is wrong and never echo the value.
        """
        if isinstance(value, Secret):
            return value
        if isinstance(value, bool) or not isinstance(value, str | int):
            kind = {bool: "a boolean", float: "a number", list: "a list"}.get(type(value))
            raise PydanticCustomError(
                "sheepdog_config",
                "{message}",
                {"message": f"must be a string, got {kind or 'a mapping'}"},
            )
        text = str(value)
        if not text:
            raise PydanticCustomError(
                "sheepdog_config", "{message}", {"message": "must not be empty"}
            )
        return cls(text)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda _: REDACTED),
        )
