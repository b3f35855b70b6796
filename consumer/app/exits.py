"""The exit-code policy: which failure ends the service with which code, and what it says.

The codes are properties of the error classes (:mod:`consumer.errors`); this
module adds what the operator must read in the last log line.
"""

from __future__ import annotations

import logging
import sqlite3

from consumer.config import Settings
from consumer.errors import (
    EXIT_BUG,
    EXIT_STORE,
    ApiFatal,
    DeadLetterFailed,
    RfmcubeCdcError,
    SourceError,
)

__all__ = ["exit_code_for"]

log = logging.getLogger("consumer.app.service")


def exit_code_for(error: BaseException, settings: Settings) -> int:
    """The exit code for ``error``, its reason logged; an unknown error is a bug
    (exit 1: the caller raises it again, for its traceback)."""
    if isinstance(error, ApiFatal):
        log.error("stopping: %s", error)
    elif isinstance(error, DeadLetterFailed):
        log.error(
            "stopping: %s; check that the dead-letter topic %s exists and accepts writes",
            error,
            settings.kafka.dead_letter_topic,
        )
    elif isinstance(error, SourceError):
        log.error("stopping: the Kafka consumer failed: %s", error.__cause__ or error)
    elif isinstance(error, sqlite3.Error | OSError):
        log.error(
            "stopping: the store %s cannot be written (%s): check the volume (space,"
            " permissions); nothing owed is lost, it was not committed",
            settings.store.path,
            error,
        )
        return EXIT_STORE
    if isinstance(error, RfmcubeCdcError) and error.exit_code is not None:
        return error.exit_code
    return EXIT_BUG
