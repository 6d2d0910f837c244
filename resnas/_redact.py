"""One helper hides the secrets of storage URLs wherever a URL is shown or written."""

from __future__ import annotations

import re

# scheme://user:password@host -- the password is everything between the first ':' of the
# credentials and the last '@' before the host (a raw '@' in a password is tolerated).
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^\s:/@]*:)(?P<password>[^\s/]*)@")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    ``postgresql://postgres:secret@db:5432/x`` -> ``postgresql://postgres:***@db:5432/x``.
    Used for error messages, progress lines, logs and the header of exported files.
    """
    return _CREDENTIALS.sub(lambda m: f"{m['head']}***@", text)
