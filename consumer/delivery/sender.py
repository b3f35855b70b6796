"""The sender: a plan's requests go out, and answers become an outcome.

Deletes first, one by one; then one merge or packed imports (see
:mod:`consumer.delivery.packing`). A 416 splits an import in halves; a 400/422 bisects
it down to the rejected customer, then within it down to the rejected order
(the customer with half its orders, then the other half; an order alone
goes with its customer, and the customer alone tells whether the customer
or the order is refused): only the culprit is dead-lettered, with the API's
message, and everything else goes out. 5xx, timeouts and 429s are retried by the
client (:mod:`consumer.delivery.http.client`), forever, without committing anything.

Imports are asynchronous on Rfmcube's side while merges and deletes are not:
a merge of a document a pending import carries is sent as an import instead
(imports are applied in the order they were accepted); the planner holds a
delete back while such an import is pending. Every accepted import is
reported with what it carried, so that its process is checked later
(:mod:`consumer.delivery.processes`).

The client is a :class:`Transport`: anything with ``send`` and ``process``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from consumer.delivery.http.body import Body
from consumer.delivery.packing import (
    Draft,
    PackedPlan,
    delete_body,
    import_envelope,
    is_order,
    merge_body,
    owed_of,
    with_orders,
)
from consumer.delivery.planner import CustomerGroup, Delete
from consumer.delivery.spool import IN_MEMORY_BYTES, ImportBody, Spool, SpooledPart
from consumer.errors import ApiRejected, ApiTooLarge
from consumer.state.obligations import OwedDoc, StagedRow
from schemas.entities import CustomerIdentity, DocRef
from schemas.rfmcube import import_process_id

__all__ = ["DeadDoc", "Outcome", "Sender", "SentImport", "Staging", "Transport"]

log = logging.getLogger(__name__)


class Transport(Protocol):
    async def send(self, call: str, body: Body) -> dict[str, Any]: ...

    async def process(self, process_id: int | str) -> dict[str, Any]: ...


class Staging(Protocol):
    """Where what an import carries is written as it is packed (the store:
    :mod:`consumer.state.settling`), and read back to split a refused customer."""

    def stage_many(self, parts: Sequence[Sequence[StagedRow]]) -> list[tuple[int, int]]: ...

    def staged(self, first: int, last: int) -> list[StagedRow]: ...


@dataclass(frozen=True, slots=True)
class DeadDoc:
    """A document the API rejected: dead-lettered with the reason and what was sent."""

    ref: DocRef
    owed: OwedDoc | None
    reason: str
    body: bytes


@dataclass(slots=True)
class SentImport:
    """An accepted import: its process, the staged rows it carried, its bytes."""

    process_id: str | None  # None: the API gave none (nothing to check)
    staged: tuple[int, int]
    bytes: int
    documents: int


@dataclass(slots=True)
class Outcome:
    done: list[OwedDoc] = field(default_factory=list)  # accepted or dead-lettered
    accepted: dict[DocRef, str] = field(default_factory=dict)  # document → hash to remember
    deleted: dict[DocRef, CustomerIdentity] = field(default_factory=dict)
    dead: list[DeadDoc] = field(default_factory=list)
    imports: list[SentImport] = field(default_factory=list)  # settled from their staged rows
    requests: Counter[str] = field(default_factory=Counter)


Settle = Callable[[Outcome], None]


class Sender:
    def __init__(
        self,
        client: Transport,
        *,
        max_request_bytes: int,
        trigger_integrations: bool = False,
    ) -> None:
        self._client = client
        self._max_bytes = max_request_bytes
        self._trigger = trigger_integrations

    @property
    def max_request_bytes(self) -> int:
        return self._max_bytes

    def dispatch(
        self,
        settle: Settle,
        staging: Staging,
        *,
        spool_directory: Path | None = None,
        on_wire: Callable[[tuple[int, int]], None] = lambda staged: None,
    ) -> Dispatch:
        """The requests of one flush; ``settle`` gets each answered request's outcome,
        ``staging`` what its imports carry; large imports spool beside the store;
        ``on_wire`` the staged rows of each import as it goes out."""
        return Dispatch(self, settle, staging, spool_directory, on_wire)


class Dispatch:
    """One flush's requests. Plans come in chunks (:meth:`add`): their deletes go
    out at once, their customers are packed into imports near the byte limit,
    across chunks, and each import goes out when the next customer would not fit
    (:meth:`finish` sends the last). What each customer carries is staged in the
    store as it is packed; its bytes stay in memory while the import is small,
    then in a spool file (:mod:`consumer.delivery.spool`). Each answered request
    is settled at once, so a crash in a long flush sends again only what was not
    accepted.

    While a full import is on the wire (a 200 MB body takes seconds to upload and
    the API seconds to read), the next one is packed: requests still go one after
    another, in order, and a delete or a merge waits for the import before it."""

    def __init__(
        self,
        sender: Sender,
        settle: Settle,
        staging: Staging,
        spool_directory: Path | None,
        on_wire: Callable[[tuple[int, int]], None],
    ) -> None:
        self._client = sender._client
        self._on_wire = on_wire
        self._trigger = sender._trigger
        self._settle = settle
        self._staging = staging
        self._directory = spool_directory
        self._spool = Spool(spool_directory)
        self._sending: asyncio.Task[None] | None = None  # the import on the wire
        self._parts: list[SpooledPart] = []
        self._size = 0
        self._head, self._tail = import_envelope(trigger_integrations=self._trigger)
        self._budget = sender._max_bytes - len(self._head) - len(self._tail) - 16
        self.full_imports = 0  # imports sent because the next customer would not fit

    @property
    def packed(self) -> int:
        """Customers waiting for the next import."""
        return len(self._parts)

    async def add(
        self, plan: PackedPlan, *, merge: bool, in_pending_import: Callable[[set[DocRef]], bool]
    ) -> None:
        """Send the plan's deletes; pack its customers (or, with ``merge`` and a single
        document no pending import carries, send it as a merge)."""
        upserted = plan.upserted if plan.deletes else set()
        if plan.deletes:
            await self._sent()
        for delete in plan.deletes:
            await self._delete(
                delete, alone=delete.owed is not None and delete.owed.ref not in upserted
            )
        group = plan.merge if merge and not self._parts else None
        if group is not None:
            await self._sent()
        if group is not None and not in_pending_import({u.ref for u in group.upserts}):
            await self._merge(group)
            return
        staged = self._staging.stage_many([draft.carried for draft in plan.drafts])
        for draft, rows in zip(plan.drafts, staged, strict=True):
            if self._parts and self._size + len(draft.body) + 1 > self._budget:
                self.full_imports += 1
                await self._send_packed()
            self._pack(draft, rows)

    def _pack(self, draft: Draft, rows: tuple[int, int]) -> None:
        size = len(draft.body)
        if self._parts and self._parts[0].offset < 0 and self._size + size > IN_MEMORY_BYTES:
            # Large now: what is in memory moves to the spool, and the rest follows.
            self._parts = [
                SpooledPart(
                    self._spool.append(p.body, separated=i > 0), p.size, p.staged, p.documents
                )
                for i, p in enumerate(self._parts)
            ]
        if self._parts and self._parts[0].offset >= 0:
            offset = self._spool.append(draft.body, separated=True)
            part = SpooledPart(offset, size, rows, draft.documents)
        else:
            part = SpooledPart(-1, size, rows, draft.documents, draft.body)
        self._parts.append(part)
        self._size += size + 1

    async def finish(self, *, send_rest: bool = True) -> None:
        """The last import goes out (unless not ``send_rest``: what it packed stays
        owed), and every request is answered."""
        if self._parts and send_rest:
            await self._send_packed()
        await self._sent()

    def close(self) -> None:
        """What was not sent stays owed: the import still on the wire (a flush cut
        short) is abandoned, the spools' files go."""
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None
        self._spool.close()

    async def _sent(self) -> None:
        """Until the import on the wire was answered (and its errors raised here)."""
        sending, self._sending = self._sending, None
        if sending is not None:
            await sending

    async def _send_packed(self) -> None:
        """The packed import goes out once the one before it was answered; the next
        one is packed meanwhile, into a spool of its own."""
        parts, spool = self._parts, self._spool
        self._parts, self._size, self._spool = [], 0, Spool(self._directory)
        await self._sent()
        self._sending = asyncio.create_task(self._send_spooled(parts, spool), name="import")
        self._on_wire((parts[0].staged[0], parts[-1].staged[1]))

    async def _send_spooled(self, parts: list[SpooledPart], spool: Spool) -> None:
        try:
            await self._send_import(parts, spool)
        finally:
            spool.close()

    def _body(self, parts: Sequence[SpooledPart], spool: Spool) -> Body:
        body = ImportBody(spool, parts, self._head, self._tail)
        return body.read_all() if len(body) <= IN_MEMORY_BYTES else body

    async def _delete(self, delete: Delete, *, alone: bool) -> None:
        outcome = Outcome()
        body = delete_body(delete)
        try:
            await self._client.send("delete_customer", body)
        except ApiRejected as exc:
            reason = f"delete_customer rejected: {exc}"
            outcome.dead.append(DeadDoc(delete.ref, delete.owed, reason, body))
        else:
            outcome.deleted[delete.ref] = delete.identity
            # A delete alone settles its document; with an upsert after it, the upsert does.
            if alone and delete.owed is not None:
                outcome.done.append(delete.owed)
        finally:
            outcome.requests["delete_customer"] += 1
            self._report(outcome)

    async def _merge(self, group: CustomerGroup) -> None:
        outcome = Outcome()
        (upsert,) = group.upserts
        call, body = merge_body(group, trigger_integrations=self._trigger)
        try:
            await self._client.send(call, body)
        except (ApiRejected, ApiTooLarge) as exc:
            outcome.dead.append(DeadDoc(upsert.ref, upsert.owed, f"{call} rejected: {exc}", body))
        else:
            outcome.accepted[upsert.ref] = upsert.hash
            outcome.done.append(upsert.owed)
        finally:
            outcome.requests[call] += 1
            self._report(outcome)

    async def _send_import(self, parts: Sequence[SpooledPart], spool: Spool) -> bool:
        """Send an import of these parts; a refusal splits it, down to the culprit.
        Returns whether it went out whole."""
        outcome = Outcome()
        outcome.requests["import"] += 1
        try:
            answer = await self._client.send("import", self._body(parts, spool))
        except (ApiTooLarge, ApiRejected) as exc:
            self._report(outcome)
            if len(parts) == 1:
                await self._isolate(parts[0], exc, spool)
                return False
            half = len(parts) // 2
            log.info("import of %d customers refused (%s): splitting", len(parts), exc.status)
            await self._send_import(parts[:half], spool)
            await self._send_import(parts[half:], spool)
            return False
        except BaseException:
            self._report(outcome)  # counted: it went out, or was cut short
            raise
        self._accepted(outcome, parts, answer)
        return True

    def _accepted(
        self, outcome: Outcome, parts: Sequence[SpooledPart], answer: dict[str, Any]
    ) -> None:
        """An import the API accepted: the staged rows it carried, its process to check."""
        try:
            process_id: str | None = str(import_process_id(answer))
        except ValueError:
            log.warning("the API accepted an import without a processId: it cannot be checked")
            process_id = None
        outcome.imports.append(
            SentImport(
                process_id,
                (parts[0].staged[0], parts[-1].staged[1]),
                sum(p.size for p in parts),
                sum(p.documents for p in parts),
            )
        )
        self._report(outcome)

    def _draft(self, part: SpooledPart, spool: Spool) -> Draft:
        body = part.body if part.offset < 0 else spool.read(part.offset, part.size)
        return Draft(body, tuple(self._staging.staged(*part.staged)), part.documents)

    def _alone(self, draft: Draft) -> SpooledPart:
        (rows,) = self._staging.stage_many([draft.carried])
        return SpooledPart(-1, len(draft.body), rows, draft.documents, draft.body)

    async def _isolate(
        self, part: SpooledPart, refusal: ApiTooLarge | ApiRejected, spool: Spool
    ) -> None:
        """One customer's part was refused: find the document the API refuses, send
        the others. Its orders are halved until one is alone with its customer; then
        the customer alone says which of the two is refused."""
        draft = self._draft(part, spool)
        orders = [c for c in draft.carried if is_order(c)]
        if len(orders) > 1:
            half = len(orders) // 2
            log.info("a customer's %d orders refused (%s): splitting", len(orders), refusal.status)
            await self._send_import([self._alone(with_orders(draft, orders[:half]))], spool)
            await self._send_import([self._alone(with_orders(draft, orders[half:]))], spool)
            return
        culprits = [c for c in draft.carried if c[3] is not None]
        if orders:
            alone = self._alone(with_orders(draft, []))
            # The customer without the order: refused too, and the customer is the culprit
            # (its orders cannot go without it); accepted, and the order is.
            if await self._send_customer_alone(alone, spool):
                culprits = orders
        outcome = Outcome()
        for doc in culprits:
            reason = f"import rejected: {refusal}"
            owed = owed_of(doc)
            outcome.dead.append(DeadDoc(owed.ref, owed, reason, draft.body))
        self._report(outcome)

    async def _send_customer_alone(self, part: SpooledPart, spool: Spool) -> bool:
        """The customer of a refused part without its orders; whether it was accepted
        (a refusal dead-letters the customer and the orders, by the caller)."""
        outcome = Outcome()
        outcome.requests["import"] += 1
        try:
            answer = await self._client.send("import", self._body([part], spool))
        except (ApiTooLarge, ApiRejected):
            self._report(outcome)
            return False
        except BaseException:
            self._report(outcome)
            raise
        self._accepted(outcome, [part], answer)
        return True

    def _report(self, outcome: Outcome) -> None:
        for dead in outcome.dead:
            if dead.owed is not None:
                outcome.done.append(dead.owed)
        self._settle(outcome)
