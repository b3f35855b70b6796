"""An import the API accepted, recorded in a store as the flusher records one:
staged, accepted, then settled page by page (:mod:`consumer.state.settling`).
For tests of what a pending import holds back (commits, adoption, floors)."""

from __future__ import annotations

from collections.abc import Iterable

from consumer.state.obligations import Obligations, OwedDoc

__all__ = ["accept_import"]


def accept_import(
    obligations: Obligations,
    process_id: str | None,
    carried: Iterable[tuple[OwedDoc, str]],
    *,
    hold_commits: bool = False,
) -> None:
    """Record that an import carrying these owed documents (each with its hash) was
    accepted, and settle it whole."""
    rows = [
        (doc.ref[0].value, doc.ref[1], digest, doc.seq, doc.delete_seq, doc.source_ms)
        for doc, digest in carried
    ]
    ((first, last),) = obligations.stage_many([rows])
    obligations.accept_import(process_id, (first, last), hold_commits=hold_commits, nbytes=0)
    while obligations.settle_page(1_000):
        pass
