"""The exceptions of rfmcube-cdc: one root, every class the package raises on purpose.

    RfmcubeCdcError                                                    exit code
    ├── ConfigError            bad configuration or mapping: refused at start-up   2
    ├── BadRecord              a record that cannot be decoded or mapped: dead-lettered
    ├── BrokerUnavailable      Kafka cannot be reached (yet): wait and try again
    ├── RegistryUnavailable    the schema registry cannot serve a schema (yet): reading waits
    ├── ReplayStalled          a replay of the topics stopped advancing
    ├── NotActive              another instance took the active role: stop sending
    ├── DeadLetterFailed       the dead-letter topic refused a dead letter             4
    ├── SourceError            the Kafka consumer failed for good (or its process)    5
    │   └── CommitFailed       one offset commit was refused (a rebalance): retried
    │       └── RevokeInProgress   asked during a revocation, which commits itself
    ├── StoreUnusable          the store cannot be opened or written                  6
    ├── NoActiveInstance       `resync`: no active instance answered here             7
    └── ApiError               an answer of the Rfmcube API (or no answer)
        ├── ApiFatal           401, 403, 406: stop with a message                     3
        ├── ApiRetriable       5xx, 429, timeouts, resets: wait and send again
        ├── ApiTooLarge        416: split the request and send the parts
        └── ApiRejected        400, 422: the API refused the content: bisect, dead-letter

Retry policy and exit code are properties of the class (``retriable``,
``exit_code``, as aiokafka's errors carry ``retriable``), not of the call
site; :data:`EXIT_CODES` is the table README.md documents. Exceptions private
to a module (a decoder's, the safety net's) never leave it: they become a
BadRecord at its edge. No message here ever contains the API key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas.debezium import Position

EXIT_OK = 0
EXIT_BUG = 1
EXIT_CONFIG = 2
EXIT_API_REFUSED = 3
EXIT_DEAD_LETTERS = 4
EXIT_KAFKA = 5
EXIT_STORE = 6
EXIT_NOT_HERE = 7

EXIT_CODES = {
    EXIT_OK: "stopped by SIGTERM or SIGINT",
    EXIT_BUG: "an unexpected error (a bug: the traceback is in the log)",
    EXIT_CONFIG: "the configuration or the mapping is wrong (the message names the key)",
    EXIT_API_REFUSED: "the API refused the key or the connector's platform (401, 403, 406)",
    EXIT_DEAD_LETTERS: "the dead-letter topic refused a dead letter",
    EXIT_KAFKA: "the Kafka consumer failed for good",
    EXIT_STORE: "the store cannot be opened or written (permissions, a full or read-only disk)",
    EXIT_NOT_HERE: "rfmcube-cdc resync: no active instance answered on this machine",
}


class RfmcubeCdcError(Exception):
    """Root of every error this package raises on purpose."""

    retriable: bool = False
    # The process's exit code when this error stops the service (None: it never does).
    exit_code: int | None = None


class ConfigError(RfmcubeCdcError):
    """A configuration or mapping file is wrong; ``path`` names the wrong key.

    ``problems`` lists every (path, problem) found, the first one included;
    ``origins`` says, by path, where a wrong value came from when the
    configuration merges several places (a file, an environment variable, a
    secret file); ``source`` is the file otherwise."""

    exit_code = EXIT_CONFIG

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        source: str | None = None,
        more: Sequence[tuple[str, str]] = (),
        origins: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.problem = problem
        self.source = source
        self.problems: tuple[tuple[str, str], ...] = ((path, problem), *more)
        self.origins: dict[str, str] = dict(origins or {})
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self._lines(self.origins)))

    def lines(self) -> list[str]:
        """One line per problem: ``path: problem [where it came from]``."""
        return self._lines({path: self.source for path, _ in self.problems} | self.origins)

    def _lines(self, origins: Mapping[str, str | None]) -> list[str]:
        return [
            f"{path}: {problem}" + (f" [{origins[path]}]" if origins.get(path) else "")
            for path, problem in self.problems
        ]


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


class RegistryUnavailable(RfmcubeCdcError):
    """The schema registry did not serve a schema: unreachable, 5xx, refused
    credentials, a timeout. Never the record's fault: reading waits and asks
    again, nothing is dead-lettered or committed past it."""

    retriable = True


class ReplayStalled(RfmcubeCdcError):
    """A partition stopped advancing before reaching its end offset."""


class NotActive(RfmcubeCdcError):
    """This instance is not (or no longer) the active one: it must not send."""


class DeadLetterFailed(RfmcubeCdcError):
    """A dead letter was not acknowledged: offsets past it must not be committed.

    The message is one line that says what to fix."""

    exit_code = EXIT_DEAD_LETTERS


class SourceError(RfmcubeCdcError):
    """The source thread died, was stopped, or could not do what was asked."""

    exit_code: int | None = EXIT_KAFKA


class CommitFailed(SourceError):
    """The broker did not confirm an offset commit (e.g. the group rebalanced)."""

    exit_code = None  # the next owner commits; nothing is lost


class RevokeInProgress(CommitFailed):
    """A commit or an offset query asked while the group takes partitions away: the
    revocation commits what is due itself (in either placement of the source)."""


class StoreUnusable(RfmcubeCdcError):
    """The SQLite store cannot be opened or written."""

    exit_code = EXIT_STORE


class NoActiveInstance(RfmcubeCdcError):
    """``rfmcube-cdc resync``: no active instance answered on this machine."""

    exit_code = EXIT_NOT_HERE


class ApiError(RfmcubeCdcError):
    """The API answered with an error status, or did not answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ApiFatal(ApiError):
    """The service cannot go on: the operator must fix something (key, platform)."""

    exit_code = EXIT_API_REFUSED


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
