"""Exceptions that the CLI and the toolbox report as one clear line, and the helpers that word them."""
from __future__ import annotations

import difflib
from typing import Iterable


class DvisError(Exception):
    """A user-facing error: bad input, bad settings, missing files. Shown as one line."""


class LayerNotFoundError(DvisError, ValueError):
    """A layer name that the model does not have; the message lists the valid names."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def suggestions(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``choices`` closest to a mistyped ``word`` (``cutoff=0`` always gives one)."""
    return difflib.get_close_matches(word, list(dict.fromkeys(choices)), n=n, cutoff=cutoff)


def closest(word: str, choices: Iterable[str]) -> str:
    """The one of ``choices`` closest to ``word``, however far."""
    return suggestions(word, choices, n=1, cutoff=0.0)[0]


def did_you_mean(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6, quote: bool = False) -> str:
    """`` (did you mean a, b?)`` for the closest ``choices``, or ``""`` when none is close."""
    close = suggestions(word, choices, n, cutoff)
    if not close:
        return ""
    return f" (did you mean {', '.join(repr(c) if quote else c for c in close)}?)"
