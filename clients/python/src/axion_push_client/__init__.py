"""A Python client for the axion-push daemon.

- :mod:`axion_push_client.objnotifypush` (also importable as the top-level
  ``ObjNotifyPush``): the old module's functions, unchanged for callers.
- :class:`AxionPush`: the commands themselves, returning result reports.
- ``axion-push-py``: the old command line (``test-push``, ``generate-vapid``).
"""

from .client import DEFAULT_PACKAGE, DEFAULT_TIMEOUT, AxionPush
from .config import BrokerSettings
from .errors import (
    AxionPushConfigError,
    AxionPushError,
    AxionPushRejected,
    AxionPushUnavailable,
)

__version__ = "0.1.0"

__all__ = [
    "AxionPush",
    "BrokerSettings",
    "AxionPushConfigError",
    "AxionPushError",
    "AxionPushRejected",
    "AxionPushUnavailable",
    "DEFAULT_PACKAGE",
    "DEFAULT_TIMEOUT",
]
