"""Semantic versions of extension versions: validation, precedence and a sortable storage key.

The storage key orders byte-wise exactly like semantic-version precedence (Semantic Versioning 2.0.0, rule 11), so a
document store can list versions "newest first" with a plain ``ORDER BY key DESC`` and page by keyset.
"""

from __future__ import annotations

import re

import semver

from services.platform.errors import InvalidArgument

_MAX_NUMERIC_DIGITS = 10
# Sorts below every character allowed in a prerelease identifier ([0-9A-Za-z-]), so a shorter
# identifier list that is a prefix of a longer one sorts first, as semver requires.
_SEPARATOR = "!"
# Sorts above the prerelease markers "0"/"1", so a release sorts after all its prereleases.
_RELEASE_MARKER = "~"
_LATEST_ALIAS = "latest"
_BUILD_METADATA = re.compile(r"\+")


def parse_version_id(version_id: str, *, field: str = "version_id") -> semver.Version:
    """Parses a version id such as ``1.4.0`` or ``2.0.0-rc.1``; build metadata is refused."""
    if version_id == _LATEST_ALIAS:
        raise InvalidArgument.field(field, "'latest' is an alias and cannot be used as a version id")
    if _BUILD_METADATA.search(version_id):
        raise InvalidArgument.field(field, "build metadata (+...) is not allowed in a version id")
    try:
        version = semver.Version.parse(version_id)
    except (ValueError, TypeError):
        raise InvalidArgument.field(
            field, f"{version_id!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE])"
        ) from None
    for number in (version.major, version.minor, version.patch):
        if len(str(number)) > _MAX_NUMERIC_DIGITS:
            raise InvalidArgument.field(field, f"version numbers have at most {_MAX_NUMERIC_DIGITS} digits")
    for identifier in _prerelease_identifiers(version):
        if identifier.isdigit() and len(identifier) > _MAX_NUMERIC_DIGITS:
            raise InvalidArgument.field(field, "numeric prerelease identifiers have at most 10 digits")
    return version


def is_prerelease(version_id: str) -> bool:
    """True for versions with a prerelease part (``2.0.0-rc.1``)."""
    return semver.Version.parse(version_id).prerelease is not None


def sort_key(version_id: str) -> str:
    """A string whose byte order equals semantic-version precedence."""
    version = semver.Version.parse(version_id)
    core = f"{version.major:010d}.{version.minor:010d}.{version.patch:010d}."
    identifiers = _prerelease_identifiers(version)
    if not identifiers:
        return core + _RELEASE_MARKER
    encoded = [f"0{int(i):010d}" if i.isdigit() else f"1{i}" for i in identifiers]
    return core + _SEPARATOR.join(encoded)


def _prerelease_identifiers(version: semver.Version) -> list[str]:
    return version.prerelease.split(".") if version.prerelease else []


LATEST_ALIAS = _LATEST_ALIAS
