"""Cache-Control rules: which ``Cache-Control`` value a served file gets.

Everything that decides the Cache-Control header of a 200/206/304 lives here.

A rule is a path glob and a value. Rules are tried in order, the first match
wins; the user's rules come first, then the built-in defaults:

1. fingerprinted names, i.e. a hex hash segment of 6+ characters right before
   the extension (``app.3f9a1c.js``, ``style-0a1b2c3d.css``)
   → ``public, max-age=31536000, immutable``
2. ``*.html`` / ``*.htm`` → ``no-cache``
3. anything else → ``public, max-age=300``

Globs use ``fnmatch`` syntax (``*``, ``?``, ``[...]``) and are matched against
the path relative to the root, with ``/`` separators and no leading slash. A
glob without a ``/`` is matched against the file name only (``*.woff2``
matches ``fonts/inter.woff2``); a glob with a ``/`` is matched against the
whole relative path (``downloads/*``). The path is the one the client asked for
(``app.js`` for a request answered from ``app.js.br``), with ``index.html``
appended for a directory.

The TOML rules file looks like this::

    [[rule]]
    glob = "downloads/*"
    cache_control = "public, max-age=3600"

    [[rule]]
    glob = "*.woff2"
    cache_control = "public, max-age=604800"
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_CACHE_CONTROL",
    "FINGERPRINT_CACHE_CONTROL",
    "HTML_CACHE_CONTROL",
    "CacheRules",
    "RulesError",
    "is_fingerprinted",
    "load_rules",
]

FINGERPRINT_CACHE_CONTROL = "public, max-age=31536000, immutable"
HTML_CACHE_CONTROL = "no-cache"
DEFAULT_CACHE_CONTROL = "public, max-age=300"

# name, then "." or "-", then 6+ hex digits, then the extension(s).
_FINGERPRINT = re.compile(r"^[^/]+[.-][0-9a-fA-F]{6,}(\.[A-Za-z0-9]+)+$")


class RulesError(ValueError):
    """A rules file or rule list is unusable; the message is one readable line."""


def is_fingerprinted(name: str) -> bool:
    """True for file names carrying a content hash before the extension."""
    return _FINGERPRINT.match(name.rsplit("/", 1)[-1]) is not None


@dataclass(frozen=True, slots=True)
class _GlobRule:
    glob: str
    cache_control: str

    def matches(self, rel_path: str, name: str) -> bool:
        subject = rel_path if "/" in self.glob else name
        return fnmatch.fnmatchcase(subject, self.glob)


class CacheRules:
    """An ordered list of (glob, Cache-Control) rules followed by the defaults."""

    def __init__(self, rules: Iterable[tuple[str, str]] | None = None) -> None:
        checked: list[_GlobRule] = []
        for item in rules or ():
            glob, value = item
            if not isinstance(glob, str) or not glob.strip():
                raise RulesError(f"rule glob must be a non-empty string, got {glob!r}")
            if not isinstance(value, str) or not value.strip():
                raise RulesError(f"rule for {glob!r}: cache_control must be a non-empty string")
            if "\r" in value or "\n" in value:
                raise RulesError(f"rule for {glob!r}: cache_control must be one line")
            checked.append(_GlobRule(glob.strip().lstrip("/"), value.strip()))
        self._rules: tuple[_GlobRule, ...] = tuple(checked)

    @property
    def rules(self) -> Sequence[tuple[str, str]]:
        """The user rules, in order (the defaults are not listed)."""
        return [(r.glob, r.cache_control) for r in self._rules]

    def cache_control(self, rel_path: str) -> str:
        """The Cache-Control value for a file at ``rel_path`` under the root."""
        rel_path = rel_path.lstrip("/")
        name = rel_path.rsplit("/", 1)[-1]
        for rule in self._rules:
            if rule.matches(rel_path, name):
                return rule.cache_control
        if _FINGERPRINT.match(name):
            return FINGERPRINT_CACHE_CONTROL
        if name.lower().endswith((".html", ".htm")):
            return HTML_CACHE_CONTROL
        return DEFAULT_CACHE_CONTROL


def load_rules(path: Path) -> list[tuple[str, str]]:
    """Read ``[[rule]]`` entries (``glob``, ``cache_control``) from a TOML file."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"rules file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"rule"}
    if unknown:
        raise RulesError(f"rules file {path}: unknown key(s) {', '.join(sorted(unknown))}")
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        raise RulesError(f"rules file {path}: 'rule' must be an array of tables ([[rule]])")
    rules: list[tuple[str, str]] = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise RulesError(f"rules file {path}: rule #{i} must be a table")
        extra = set(entry) - {"glob", "cache_control"}
        if extra:
            raise RulesError(f"rules file {path}: rule #{i} has unknown key(s) {sorted(extra)}")
        glob, value = entry.get("glob"), entry.get("cache_control")
        if not isinstance(glob, str) or not isinstance(value, str):
            raise RulesError(f"rules file {path}: rule #{i} needs string 'glob' and 'cache_control'")
        rules.append((glob, value))
    CacheRules(rules)  # validate values the same way the app will
    return rules
