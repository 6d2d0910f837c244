"""Errors that reach the user as one clear line and a non-zero exit code."""

from __future__ import annotations

from resnas._redact import redact


class ResnasError(Exception):
    """A known, user-facing failure: the CLI prints it as one line and exits 2.

    Its text never carries a storage password, whoever builds the message.
    """

    exit_code = 2

    def __str__(self) -> str:
        return redact(super().__str__())


class SpecError(ResnasError):
    """A search-space spec is malformed; names the YAML path and, where known, the line."""

    def __init__(self, message: str, path: str = "", line: int | None = None, source: str = ""):
        self.message = message
        self.path = path
        self.line = line
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source or "spec"
        if self.line is not None:
            where += f":{self.line}"
        if self.path:
            return redact(f"{where}: {self.path}: {self.message}")
        return redact(f"{where}: {self.message}")


class StudyError(ResnasError):
    """A study cannot be created, resumed, read or exported as asked."""
