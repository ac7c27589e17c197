"""Reading one mapping of the YAML config: typed getters that know their key path.

Each getter records the key it read, so that :meth:`Section.finish` can reject every key nobody
asked for. Secret getters never echo the value in an error.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from sheepdog.core.errors import ConfigError
from sheepdog.core.secret import Secret

_MISSING: Final = object()


class Section:
    def __init__(self, data: Any, path: str, base_dir: Path | None = None) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path or "config", "must be a mapping of keys to values")
        self._data: dict[Any, Any] = data
        self._path = path
        self._base_dir = base_dir
        self._used: set[str] = set()

    @property
    def given(self) -> set[str]:
        return {str(key) for key in self._data}

    def child(self, key: str) -> str:
        key = key or '""'  # an empty key must still show up in the path
        return f"{self._path}.{key}" if self._path else key

    def names(self) -> list[str]:
        self._used.update(str(key) for key in self._data)
        return [str(key) for key in self._data]

    def _get(self, key: str) -> Any:
        self._used.add(key)
        for raw_key, value in self._data.items():
            if str(raw_key) == key:
                return value
        return _MISSING

    def _value(self, key: str, default: Any, required: bool) -> Any:
        value = self._get(key)
        if value is _MISSING or value is None:
            if required:
                raise ConfigError(self.child(key), "required")
            return default
        return value

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        value = self._value(key, default, required)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(self.child(key), f"must be a string, got {_kind(value)}")
        text = str(value)
        if required and not text.strip():
            raise ConfigError(self.child(key), "must not be empty")
        return text

    def choice(
        self, key: str, default: str | None, choices: tuple[str, ...], *, required: bool = False
    ) -> str:
        value = self.string(key, default, required=required)
        if value not in choices:
            raise ConfigError(self.child(key), f"{value!r} is not one of {', '.join(choices)}")
        return value

    def url(self, key: str, default: str) -> str:
        value = self.string(key, default)
        check_http_url(value, self.child(key))
        return value

    def path(self, key: str, default: str | None) -> Path:
        value = self.string(key, default, required=default is None)
        path = _expand_home(value, self.child(key))
        # As in Prometheus: a relative path in a file is relative to that file's directory.
        if not path.is_absolute() and self._base_dir is not None:
            path = self._base_dir / path
        return path

    def number(
        self,
        key: str,
        default: float = 0.0,
        *,
        required: bool = False,
        minimum: float | None = None,
        positive: bool = False,
    ) -> float:
        value = self._value(key, default, required)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.child(key), f"must be a number, got {_kind(value)}")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(self.child(key), "must be a finite number")
        if positive and number <= 0:
            raise ConfigError(self.child(key), f"must be greater than 0, got {value}")
        if minimum is not None and number < minimum:
            raise ConfigError(self.child(key), f"must be at least {minimum:g}, got {value}")
        return number

    def integer(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._value(key, default, False)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.child(key), f"must be a whole number, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise ConfigError(self.child(key), f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(self.child(key), f"must be at most {maximum}, got {value}")
        return value

    def string_list(self, key: str, *, required: bool = False) -> list[str]:
        value = self._value(key, [], required)
        if not isinstance(value, list):
            raise ConfigError(self.child(key), f"must be a list, got {_kind(value)}")
        result = []
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise ConfigError(
                    f"{self.child(key)}[{index}]", f"must be a string, got {_kind(item)}"
                )
            result.append(str(item))
        return result

    def section(self, key: str, *, required: bool = False) -> Section:
        value = self._value(key, {}, required)
        return Section(value, self.child(key), self._base_dir)

    def optional_section(self, key: str) -> Section | None:
        value = self._get(key)
        if value is _MISSING or value is None:
            return None
        return Section(value, self.child(key), self._base_dir)

    def section_list(self, key: str) -> list[Section]:
        value = self._value(key, [], False)
        if not isinstance(value, list):
            raise ConfigError(self.child(key), f"must be a list, got {_kind(value)}")
        return [
            Section(item, f"{self.child(key)}[{index}]", self._base_dir)
            for index, item in enumerate(value)
        ]

    def secret(self, key: str, *, required: bool, allow_empty: bool = False) -> Secret | None:
        """A secret given inline as ``key`` or in a file as ``key_file``; never echoed."""
        file_key = f"{key}_file"
        inline = self._get(key)
        from_file = self._get(file_key)
        if inline is not _MISSING and from_file is not _MISSING:
            raise ConfigError(self.child(key), f"give either {key} or {file_key}, not both")
        if from_file is not _MISSING and from_file is not None:
            if not isinstance(from_file, str):
                raise ConfigError(self.child(file_key), "must be a file path")
            value = self._read_secret_file(from_file, self.child(file_key))
            path = self.child(file_key)
        elif inline is _MISSING or inline is None:
            if required:
                raise ConfigError(self.child(key), "required")
            return None
        else:
            if isinstance(inline, bool) or not isinstance(inline, str | int):
                raise ConfigError(self.child(key), f"must be a string, got {_kind(inline)}")
            value = str(inline)
            path = self.child(key)
        if not value:
            if allow_empty:
                return None
            raise ConfigError(path, "must not be empty")
        return Secret(value)

    def secret_list(self, key: str) -> list[Secret]:
        """A list of secrets inline as ``key``, or ``key_file``: one path or a list of paths."""
        file_key = f"{key}_file"
        inline = self._get(key)
        from_files = self._get(file_key)
        secrets: list[Secret] = []
        if inline is not _MISSING and inline is not None:
            if not isinstance(inline, list):
                raise ConfigError(self.child(key), f"must be a list, got {_kind(inline)}")
            for index, item in enumerate(inline):
                if isinstance(item, bool) or not isinstance(item, str | int) or not str(item):
                    raise ConfigError(f"{self.child(key)}[{index}]", "must be a non-empty string")
                secrets.append(Secret(str(item)))
        if from_files is not _MISSING and from_files is not None:
            paths = [from_files] if isinstance(from_files, str) else from_files
            if not isinstance(paths, list):
                raise ConfigError(self.child(file_key), "must be a file path or a list of paths")
            for index, path in enumerate(paths):
                where = f"{self.child(file_key)}[{index}]"
                if not isinstance(path, str):
                    raise ConfigError(where, "must be a file path")
                value = self._read_secret_file(path, where)
                if not value:
                    raise ConfigError(where, "the file is empty")
                secrets.append(Secret(value))
        return secrets

    def _read_secret_file(self, name: str, path: str) -> str:
        file = _expand_home(name, path)
        if not file.is_absolute() and self._base_dir is not None:
            file = self._base_dir / file
        try:
            return file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(path, f"{file}: no such file") from None
        except UnicodeDecodeError:
            raise ConfigError(path, f"{file}: not valid UTF-8") from None
        except OSError as exc:
            raise ConfigError(path, f"{file}: cannot read ({exc.strerror})") from None

    def finish(self) -> None:
        """Reject the keys nobody asked for, suggesting the nearest known one."""
        for raw_key in self._data:
            key = str(raw_key)
            if key in self._used:
                continue
            hint = difflib.get_close_matches(key, sorted(self._used), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(self.child(key), f"unknown key{suggestion}")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def check_http_url(url: str, path: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # The URL may carry a key: say what is wrong without echoing it.
        raise ConfigError(path, "must be an http:// or https:// URL")


def _expand_home(name: str, path: str) -> Path:
    """``~`` and ``~user`` expanded; an unknown user is a config error, not a crash."""
    try:
        return Path(name).expanduser()
    except RuntimeError:
        raise ConfigError(
            path, f"cannot expand {name.split('/')[0]!r}: no such home directory"
        ) from None
