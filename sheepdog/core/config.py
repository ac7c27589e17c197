"""Config loading machinery that every part of the schema shares.

Loading goes: strict YAML (duplicate keys refused) → ``${VAR}`` expansion → validation into
frozen pydantic models. Each half declares its own models on :class:`ConfigModel`, which gives
them what users rely on everywhere: unknown keys refused with "did you mean", ``null`` taken as
"not given", and every secret field ``X`` also accepted as ``X_file`` (a path whose content,
stripped, is the value). :func:`validate_document` turns pydantic's errors into one
:class:`ConfigError` naming the key path; no message ever echoes a secret, nor a ``_file`` path
that came from an environment variable.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sheepdog.core.envsubst import Expanded, expand_tree
from sheepdog.core.errors import ConfigError, kind_of
from sheepdog.core.secret import Secret

__all__ = [
    "NAME_PATTERN",
    "ConfigModel",
    "ConfigPath",
    "HttpUrl",
    "NonNegativeNumber",
    "Number",
    "PositiveNumber",
    "SecretUrl",
    "Text",
    "config_error",
    "kind_of",
    "read_document",
    "secrets_of",
    "section",
    "validate_document",
    "whole_number",
]

M = TypeVar("M", bound=BaseModel)

NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Names of clients and targets: they become label values and URL path segments."""

_ERROR: Final = "sheepdog_config"


def config_error(message: str, *at: str | int) -> PydanticCustomError:
    """An error for :func:`validate_document`; ``at`` continues the key path of the model (or
    field) whose validator raises it."""
    return PydanticCustomError(_ERROR, "{message}", {"message": message, "at": at})


# --------------------------------------------------------------------------------------------
# Field types: YAML scalars taken as people write them, with our own messages.


def _text(value: Any) -> str:
    # YAML makes `name: 123` a number; a string field takes it as written. A boolean is a slip.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise config_error(f"must be a string, got {kind_of(value)}")
    return str(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise config_error(f"must be a number, got {kind_of(value)}")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise config_error("must be a finite number")
    return number


def _non_negative(value: Any) -> float:
    number = _number(value)
    if number < 0:
        raise config_error(f"must be at least 0, got {value}")
    return number


def _positive(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise config_error(f"must be greater than 0, got {value}")
    return number


def whole_number(*, minimum: int | None = None, maximum: int | None = None) -> BeforeValidator:
    """For ``Annotated[int, whole_number(minimum=1)]``: an integer within bounds."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise config_error(f"must be a whole number, got {kind_of(value)}")
        if minimum is not None and value < minimum:
            raise config_error(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise config_error(f"must be at most {maximum}, got {value}")
        return value

    return BeforeValidator(check)


def section() -> Any:
    """The default of a section field: validated like a section the file gives empty, so its
    own defaults (and validators that read the environment) apply."""
    return Field(default_factory=dict, validate_default=True)


def _http_url(value: Any) -> str:
    text = _text(value)
    check_http_url(text)
    return text


def check_http_url(url: str) -> None:
    """Raise unless ``url`` is http(s) with a host; says what is wrong without echoing it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        # The URL may carry a key.
        raise config_error("must be an http:// or https:// URL")


def _secret_url(value: Any) -> Secret:
    secret = Secret.validate(value)
    check_http_url(secret.reveal())
    return secret


def _config_path(value: Any, info: ValidationInfo) -> Path:
    path = expand_home(_text(value))
    # As in Prometheus: a relative path in a file is relative to that file's directory.
    base_dir = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def expand_home(name: str) -> Path:
    """``~`` and ``~user`` expanded; an unknown user or a NUL is a config error, not a crash."""
    if "\0" in name:
        raise config_error("a file name cannot hold a NUL character")
    try:
        return Path(name).expanduser()
    except RuntimeError:
        raise config_error(
            f"cannot expand {name.split('/')[0]!r}: no such home directory"
        ) from None


Text = Annotated[str, BeforeValidator(_text)]
Number = Annotated[float, BeforeValidator(_number)]
NonNegativeNumber = Annotated[float, BeforeValidator(_non_negative)]
PositiveNumber = Annotated[float, BeforeValidator(_positive)]
HttpUrl = Annotated[str, BeforeValidator(_http_url)]
SecretUrl = Annotated[Secret, BeforeValidator(_secret_url)]
"""A URL that carries a key or token (a robot webhook): a secret, checked without echoing it."""
ConfigPath = Annotated[Path, BeforeValidator(_config_path)]
"""A path; relative ones are relative to the config file's directory."""


# --------------------------------------------------------------------------------------------
# The base model


class ConfigModel(BaseModel):
    """A frozen section of the config. Subclasses declare fields; this class adds, once for all:

    - unknown keys refused, with the nearest known key suggested (before any field is checked,
      so a misspelt required key is reported as the unknown key it is);
    - ``null`` meaning "not given" (the default applies, or "required");
    - ``X_file`` for every field ``X`` whose type holds :class:`Secret`: the file's content,
      stripped (for a tuple of secrets, one path or a list of paths, added to those inline).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)

    _secret_fields: ClassVar[dict[type[BaseModel], tuple[str, ...]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _prepare_input(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = {key: value for key, value in data.items() if value is not None}
        secrets = cls.secret_field_names()
        known = cls.known_keys()
        for key in data:
            if not isinstance(key, str) or key not in known:
                hint = difflib.get_close_matches(str(key), sorted(known), n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise config_error(f"unknown key{suggestion}", str(key) or '""')
        for name in secrets:
            file_key = f"{name}_file"
            if file_key not in data:
                continue
            base_dir = (info.context or {}).get("base_dir")
            if _is_tuple(cls.model_fields[name].annotation):
                inline = data.get(name, [])
                if not isinstance(inline, list):
                    raise config_error(f"must be a list, got {kind_of(inline)}", name)
                data[name] = [*inline, *_read_secret_files(data.pop(file_key), file_key, base_dir)]
            else:
                if name in data:
                    raise config_error(f"give either {name} or {file_key}, not both", name)
                data[name] = _read_secret_file(data.pop(file_key), (file_key,), base_dir)
        return data

    @classmethod
    def secret_field_names(cls) -> tuple[str, ...]:
        """Fields whose type holds :class:`Secret` (each may be given as ``<name>_file``)."""
        found = ConfigModel._secret_fields.get(cls)
        if found is None:
            found = tuple(
                name for name, field in cls.model_fields.items() if _holds_secret(field.annotation)
            )
            ConfigModel._secret_fields[cls] = found
        return found

    @classmethod
    def known_keys(cls) -> set[str]:
        keys = {field.alias or name for name, field in cls.model_fields.items()}
        return keys | {f"{name}_file" for name in cls.secret_field_names()}


def _holds_secret(annotation: Any) -> bool:
    if annotation is Secret:
        return True
    return any(_holds_secret(arg) for arg in get_args(annotation))


def _is_tuple(annotation: Any) -> bool:
    return get_origin(annotation) is tuple or any(
        get_origin(arg) is tuple for arg in get_args(annotation)
    )


def _read_secret_files(value: Any, key: str, base_dir: Path | None) -> list[str]:
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list):
        raise config_error("must be a file path or a list of paths", key)
    secrets = []
    for index, path in enumerate(paths):
        secret = _read_secret_file(path, (key, index), base_dir)
        if not secret:
            raise config_error("the file is empty", key, index)
        secrets.append(secret)
    return secrets


def _read_secret_file(value: Any, at: tuple[str | int, ...], base_dir: Path | None) -> str:
    """The stripped content of the file ``value`` names; every failure a config error at ``at``.

    The message shows the path as the config wrote it when it came (in part) from an
    environment variable, since the variable may hold something secret; else the path read.
    """
    if not isinstance(value, str):
        raise config_error("must be a file path", *at)
    try:
        file = expand_home(value)
    except PydanticCustomError as exc:
        # The reason quotes the ~user or the NUL, which may be what a variable put in.
        reason = (
            f"the file named by {value.written!r}: not a valid file name"
            if isinstance(value, Expanded)
            else str(exc)
        )
        raise config_error(reason, *at) from None
    if not file.is_absolute() and base_dir is not None:
        file = base_dir / file
    shown = f"the file named by {value.written!r}" if isinstance(value, Expanded) else str(file)
    try:
        return file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise config_error(f"{shown}: no such file", *at) from None
    except UnicodeDecodeError:
        raise config_error(f"{shown}: not valid UTF-8", *at) from None
    except OSError as exc:
        raise config_error(f"{shown}: cannot read ({exc.strerror or 'error'})", *at) from None
    except ValueError:  # a name the OS refuses outright
        raise config_error(f"{shown}: not a valid file name", *at) from None


# --------------------------------------------------------------------------------------------
# Reading and validating a document


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_document(path: Path) -> Any:
    """The YAML document in ``path``, or a :class:`ConfigError` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(str(path), f"invalid YAML at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(str(path), "invalid YAML: nested too deeply") from None


def validate_document(
    model: type[M],
    raw: Any,
    *,
    env: Mapping[str, str],
    base_dir: Path | None = None,
) -> M:
    """``raw`` (a parsed YAML document) expanded and validated into ``model``.

    Raises one :class:`ConfigError`: the first unknown key if there is one (it is likely what
    made a required key look missing), else the first error in the order of the schema.
    """
    document = expand_tree(raw, env) if raw is not None else {}
    if not isinstance(document, dict):
        raise ConfigError("config", "must be a mapping of keys to values")
    try:
        return model.model_validate(document, context={"base_dir": base_dir, "env": env})
    except ValidationError as exc:
        raise _translate(exc, document) from None
    except RecursionError:
        raise ConfigError("config", "nested too deeply") from None


def _translate(exc: ValidationError, document: Any) -> ConfigError:
    errors = exc.errors(include_url=False, include_input=True)
    unknown = [e for e in errors if e["type"] == _ERROR and "unknown key" in str(e["msg"])]
    error = (unknown or errors)[0]
    kind = error["type"]
    keys = _key_path(error["loc"], document, missing=kind == "missing")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == _ERROR:
        keys += list(ctx.get("at", ()))
        message = str(ctx["message"])
    elif kind == "missing":
        message = "required"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "must be a mapping of keys to values"
    elif kind in ("list_type", "tuple_type"):
        message = f"must be a list, got {kind_of(value)}"
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"{value!r} is not one of {', '.join(choices)}"
    elif kind == "union_tag_invalid":
        keys.append("type")
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        message = f"{ctx.get('tag')!r} is not one of {', '.join(choices)}"
    elif kind == "union_tag_not_found":
        keys.append("type")
        message = "required"
    else:
        # pydantic's own words; they never hold the input.
        text = str(error["msg"])
        message = text[:1].lower() + text[1:]
    return ConfigError(_join(keys), message)


def _key_path(loc: tuple[int | str, ...], document: Any, *, missing: bool) -> list[str | int]:
    """The keys of ``loc`` that are keys of the document (and, for a ``missing`` error, the
    key not given): pydantic also puts union tags and ``[key]`` in a location."""
    keys: list[str | int] = []
    node = document
    for index, part in enumerate(loc):
        if _has(node, part):
            keys.append(part)
            node = node[part]
        elif isinstance(part, str) and _has(node, f"{part}_file"):
            keys.append(f"{part}_file")  # the secret's value was read from that file
            break
        elif missing and index == len(loc) - 1:
            keys.append(part)
    return keys


def _has(node: Any, part: int | str) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _join(keys: list[str | int]) -> str:
    text = ""
    for key in keys:
        if isinstance(key, int):
            text += f"[{key}]"
        else:
            key = key or '""'  # an empty key must still show up in the path
            text = f"{text}.{key}" if text else key
    return text or "config"


def secrets_of(model: BaseModel) -> list[Secret]:
    """Every secret in ``model``, so that tests can prove none of them is ever printed."""
    return list(_secrets(model))


def _secrets(value: Any) -> Iterator[Secret]:
    if isinstance(value, Secret):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets(getattr(value, name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secrets(item)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _secrets(item)
