"""Names of projects, artifacts, aliases and version specs, and manifest paths.

Everything that comes from a user or from a store file passes through here
before it becomes a key or a path, so `..`, `/` and NUL never reach a store
key or the local filesystem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from artfs.errors import InvalidInput, NameTooLong

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_VERSION = re.compile(r"v(0|[1-9][0-9]{0,8})\Z")
RESERVED_ALIASES = {"drafts"}
LATEST = "latest"


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"invalid {what} {name!r}: use letters, digits, '-', '_' and '.', "
            "not starting with '.' or '-', no '..', at most 128 characters"
        )
    return name


def is_valid_name(name: str) -> bool:
    """For filtering what a listing finds (store folders, draft folders): no exception."""
    return isinstance(name, str) and bool(_NAME.match(name)) and ".." not in name


def check_alias(alias: str) -> str:
    check_name(alias, "alias")
    if alias in RESERVED_ALIASES or _VERSION.match(alias):
        raise InvalidInput(f"invalid alias {alias!r}: 'vN' and 'drafts' are reserved")
    return alias


def parse_version(text: str) -> int | None:
    """`v12` -> 12; anything else -> None."""
    m = _VERSION.match(text)
    return int(text[1:]) if m else None


def version_name(number: int) -> str:
    return f"v{number}"


@dataclass(frozen=True)
class ArtifactName:
    project: str
    name: str

    def __str__(self) -> str:
        return f"{self.project}/{self.name}"


@dataclass(frozen=True)
class ArtifactSpec:
    """`project/name[:alias-or-vN]`; `selector` is None when not given."""

    artifact: ArtifactName
    selector: str | None

    def __str__(self) -> str:
        return f"{self.artifact}:{self.selector}" if self.selector else str(self.artifact)


def parse_artifact_name(text: str, default_project: str | None = None) -> ArtifactName:
    parts = text.split("/")
    if len(parts) == 1 and default_project:
        parts = [default_project, parts[0]]
    if len(parts) != 2:
        raise InvalidInput(f"invalid artifact name {text!r}: expected PROJECT/NAME")
    return ArtifactName(check_name(parts[0], "project"), check_name(parts[1], "artifact name"))


def parse_spec(text: str, default_project: str | None = None) -> ArtifactSpec:
    base, sep, selector = text.partition(":")
    artifact = parse_artifact_name(base, default_project)
    if sep and selector != LATEST and parse_version(selector) is None:
        check_alias(selector)
    return ArtifactSpec(artifact, selector or None)


def normalize_path(path: str) -> str:
    """A manifest path: relative, '/'-separated, no '.', '..', empty parts, NUL or newline."""
    if not isinstance(path, str) or "\x00" in path:
        raise InvalidInput(f"invalid path {path!r}: contains NUL")
    if "\n" in path:  # manifests refuse it on read (Manifest._validate), so refuse it on write
        raise InvalidInput(f"invalid path {path!r}: contains a newline")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise InvalidInput(f"invalid path {path!r}: empty")
    if ".." in parts:
        raise InvalidInput(f"invalid path {path!r}: '..' is not allowed")
    if path.startswith("/"):
        raise InvalidInput(f"invalid path {path!r}: must be relative")
    for p in parts:
        if len(p.encode()) > 255:
            raise InvalidInput(f"invalid path {path!r}: a component is longer than 255 bytes")
    return "/".join(parts)


def join_path(prefix: str | None, rel: str) -> str:
    return normalize_path(f"{prefix}/{rel}" if prefix else rel)


NAME_MAX = 255  # bytes in one path component, as on ext4


def kernel_name(raw: bytes) -> str:
    """A name the kernel gives us: at most 255 bytes (else NameTooLong) and UTF-8, as manifests
    hold it (else InvalidInput)."""
    if len(raw) > NAME_MAX:
        raise NameTooLong(f"name of {len(raw)} bytes (at most {NAME_MAX})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"name {raw!r} is not UTF-8") from None
