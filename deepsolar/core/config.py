"""Shared pydantic base and YAML loading for every config in the project.

Each stage defines its own config model in its own module (e.g. ``tiling.TileGridConfig``);
this module only holds the common base class and the loader that turns validation failures
into :class:`~deepsolar.core.errors.ConfigError` naming the file and the field.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from deepsolar.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


ECHO_LIMIT = 200


def short_repr(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` cut to about ``limit`` characters, without building the full repr first.

    A YAML alias bomb expands to megabytes; a pasted 10 MB string must not be echoed whole.

    Args:
        value: Any value.
        limit: Maximum length of the result in characters.

    Returns:
        The shortened repr, ending in ``...`` when cut.
    """
    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 8
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_validation_error(
    err: ValidationError, *, unknown_key_note: str | None = None, limit: int | None = 10
) -> str:
    """One line per problem: ``field.path: message (got value)``.

    Values of unknown keys are never echoed (they may be secrets).

    Args:
        err: The pydantic validation error.
        unknown_key_note: Said of an unknown key instead of pydantic's message (e.g. where such
            keys belong); None: pydantic's message.
        limit: At most this many problems are listed (None: all).

    Returns:
        The problems joined by ``"; "``.
    """
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        unknown = e["type"] == "extra_forbidden"
        got = e.get("input")
        # never echo the value of an unknown key: it may be a secret pasted in the wrong place
        echo = got is not None and not isinstance(got, dict) and not unknown
        got_s = f" (got {short_repr(got)})" if echo else ""
        msg = unknown_key_note if unknown and unknown_key_note else str(e["msg"])[:ECHO_LIMIT]
        lines.append(f"{loc[:ECHO_LIMIT]}: {msg}{got_s}")
        if limit is not None and len(lines) == limit:  # thousands of bad entries: ten say enough
            lines.append(f"... and {len(err.errors()) - limit} more")
            break
    return "; ".join(lines)


def validate_config(model: type[M], data: Any, *, where: str = "parameters") -> M:
    """Validate ``data`` against ``model``; raise ConfigError naming each bad field.

    Args:
        model: The pydantic config class.
        data: A mapping of parameters, or an instance of ``model`` (returned as is).
        where: Where the data came from (a file path), for the error message.

    Returns:
        The validated config.

    Raises:
        ConfigError: If validation fails.
    """
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            f"invalid {model.__name__}: {format_validation_error(err)}",
            where=where,
            fix="correct the listed fields (see configs/ for documented examples)",
        ) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing file or bad YAML.

    Args:
        path: The YAML file.

    Returns:
        The top-level mapping (``{}`` for an empty file).

    Raises:
        ConfigError: If the file is missing, unreadable, not valid YAML or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            "config file not found", where=str(p), fix="pass the path of an existing YAML file"
        )
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(
            f"not valid YAML: {' '.join(str(err).split())[:ECHO_LIMIT]}",
            where=str(p),
            fix="fix the YAML syntax",
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"cannot read the config file ({type(err).__name__}: {str(err)[:ECHO_LIMIT]})",
            where=str(p),
            fix="pass a readable UTF-8 YAML file",
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping at the top level, got {type(data).__name__}",
            where=str(p),
            fix="write the config as 'key: value' lines",
        )
    return data


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) to a nested parameter mapping, in place.

    The one ``--set`` syntax of every command that takes ``--config``.

    Args:
        data: the parameter mapping (as read from the YAML config).
        item: ``dotted.key=value``.

    Raises:
        ConfigError: ``item`` has no ``=`` or no key, or a dotted part names a non-mapping.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad --set '{item}'", where="command line", fix="write --set key=value")
    set_dotted(data, key.strip(), yaml.safe_load(raw), where=f"--set {item}")


def set_dotted(data: dict[str, Any], key: str, value: Any, *, where: str = "command line") -> None:
    """Set ``data["a"]["b"] = value`` for ``key="a.b"``, creating missing sections, in place.

    Args:
        data: the nested parameter mapping.
        key: the dotted key.
        value: the value to set.
        where: what set it (for the error message), e.g. ``--set a.b=1``.

    Raises:
        ConfigError: a dotted part names a value that is not a section.
    """
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{part}' is not a section", where=where, fix="check the key")
    node[leaf] = value


def config_with_sets(config: str | Path | None, sets: Iterable[str] | None) -> dict[str, Any]:
    """A ``--config`` file's mapping with the command line's ``--set key=value`` applied.

    Args:
        config: the YAML file (None: start from an empty mapping).
        sets: the ``--set`` items (dotted keys, YAML values), applied in order.

    Returns:
        The mapping (as read, then overridden).

    Raises:
        ConfigError: the file cannot be read or parsed, or a ``--set`` item is malformed.
    """
    data = load_yaml(config) if config else {}
    for item in sets or []:
        apply_override(data, item)
    return data


def load_config(model: type[M], path: str | Path) -> M:
    """Load and validate a YAML config file into ``model``.

    Args:
        model: The pydantic config class.
        path: The YAML file.

    Returns:
        The validated config.

    Raises:
        ConfigError: If the file cannot be read or parsed, or fails validation.
    """
    return validate_config(model, load_yaml(path), where=str(path))


def changed_fields(saved: dict[str, Any], current: dict[str, Any], free: set[str]) -> list[str]:
    """Dotted keys whose values differ between two nested config dumps, ignoring ``free`` keys.

    A key in ``free`` that holds a mapping is compared as a whole and ignored as a whole (e.g.
    ``cam`` for the segmenter), so it may change freely on resume.

    Args:
        saved: The config dump stored with a run (e.g. in a checkpoint).
        current: The config dump of the current run.
        free: Dotted keys allowed to differ.

    Returns:
        The differing dotted keys, sorted.
    """

    def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and key not in free:
                out.update(flatten(v, key + "."))
            else:
                out[key] = v
        return out

    a, b = flatten(saved), flatten(current)
    return sorted(k for k in set(a) | set(b) if k not in free and a.get(k) != b.get(k))
