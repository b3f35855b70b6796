"""The exceptions of rfmcube-cdc, one root and four branches.

    RfmcubeCdcError
    ├── ConfigError            bad configuration or mapping: refused at start-up
    ├── BadRecord              a record that cannot be decoded or mapped: dead-lettered
    ├── BrokerUnavailable      Kafka cannot be reached (yet): wait and try again
    ├── NotActive              another instance took the active role: stop sending
    └── ApiError               an answer of the Rfmcube API (or no answer)
        ├── ApiFatal           401, 403, 406: stop with a message, commit nothing further
        ├── ApiRetriable       5xx, 429, timeouts, resets: wait and send again
        ├── ApiTooLarge        416: split the request and send the parts
        └── ApiRejected        400, 422: the API refused the content: bisect, dead-letter

Retry policy is a property of the class (``retriable``), not of the call site.
No message here ever contains the API key.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.debezium import Position


class RfmcubeCdcError(Exception):
    """Root of every error this package raises on purpose."""

    retriable: bool = False


class ConfigError(RfmcubeCdcError):
    """A configuration or mapping file is wrong; ``path`` names the wrong key.

    ``problems`` lists every (path, problem) found, the first one included."""

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        source: str | None = None,
        more: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.path = path
        self.problem = problem
        self.source = source
        self.problems: tuple[tuple[str, str], ...] = ((path, problem), *more)
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(f"{p}: {m}" for p, m in self.problems))


class BadRecord(RfmcubeCdcError):
    """A record that cannot be decoded or mapped. The stream goes on without it."""

    def __init__(self, position: Position, reason: str) -> None:
        self.position = position
        self.reason = reason
        super().__init__(
            f"{position.topic} partition {position.partition} offset {position.offset}: {reason}"
        )


class BrokerUnavailable(RfmcubeCdcError):
    """Kafka did not answer a look-up outside the consumer thread; try again later."""

    retriable = True


class NotActive(RfmcubeCdcError):
    """This instance is not (or no longer) the active one: it must not send."""


class ApiError(RfmcubeCdcError):
    """The API answered with an error status, or did not answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ApiFatal(ApiError):
    """The service cannot go on: the operator must fix something (key, platform)."""


class ApiRetriable(ApiError):
    """A passing fault: send the same request again later."""

    retriable = True

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ApiTooLarge(ApiError):
    """416: the request is over the size limit; split it."""


class ApiRejected(ApiError):
    """400/422: the API refuses the content of the request."""
