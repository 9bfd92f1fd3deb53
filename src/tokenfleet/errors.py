"""The one error type users see: a single line that names the field and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TokenfleetError(ValueError):
    """Bad input or an impossible request; the CLI prints its message as one line."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> TokenfleetError:
    """An error for an unknown catalog name, suggesting the closest known ones."""
    known = sorted(known)
    close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return TokenfleetError(
        f"unknown {kind} {name!r}: {hint}choose one of: {', '.join(known)}"
    )
