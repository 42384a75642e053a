"""The exceptions of the client."""

from __future__ import annotations

from typing import Optional


class AxionPushError(Exception):
    """Base class of every error this package raises."""


class AxionPushConfigError(AxionPushError):
    """config.yaml could not be read or has a broker setting that is wrong."""


class AxionPushUnavailable(AxionPushError):
    """The broker cannot be reached, or the daemon did not answer in time."""


class AxionPushRejected(AxionPushError):
    """The daemon refused the command; ``report`` is its result report."""

    def __init__(self, message: str, report: Optional[dict] = None):
        super().__init__(message)
        self.report = report or {}

    @property
    def error(self) -> str:
        return str(self.report.get("error", ""))

    @property
    def code(self) -> Optional[str]:
        """The report's ``code`` when the refusal has one a client can act
        on: ``endpoint-taken`` (the browser's endpoint is another user's;
        the browser makes a new subscription and subscribes that)."""
        code = self.report.get("code")
        return code if isinstance(code, str) else None
