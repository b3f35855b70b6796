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

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from consumer.delivery.packing import (
    Part,
    delete_body,
    import_body,
    merge_body,
    part_of,
    single_merge,
    with_orders,
)
from consumer.delivery.planner import CustomerGroup, Delete, Plan
from consumer.errors import ApiRejected, ApiTooLarge
from consumer.state.obligations import OwedDoc
from schemas.entities import CustomerIdentity, DocRef, Kind
from schemas.rfmcube import import_process_id

__all__ = ["DeadDoc", "Outcome", "Sender", "SentImport", "Transport"]

log = logging.getLogger(__name__)


class Transport(Protocol):
    async def send(self, call: str, body: bytes) -> dict[str, Any]: ...

    async def process(self, process_id: int | str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class DeadDoc:
    """A document the API rejected: dead-lettered with the reason and what was sent."""

    ref: DocRef
    owed: OwedDoc | None
    reason: str
    body: bytes


@dataclass(slots=True)
class SentImport:
    process_id: str | None  # None: the API gave none (nothing to check)
    docs: dict[DocRef, str | None]  # document → hash (None: a container it wrote again)


@dataclass(slots=True)
class Outcome:
    done: list[OwedDoc] = field(default_factory=list)  # accepted or dead-lettered
    accepted: dict[DocRef, str] = field(default_factory=dict)  # document → hash to remember
    deleted: dict[DocRef, CustomerIdentity] = field(default_factory=dict)
    dead: list[DeadDoc] = field(default_factory=list)
    imports: list[SentImport] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    bytes: int = 0  # of the documents an accepted import carried


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

    def dispatch(self, settle: Settle) -> Dispatch:
        """The requests of one flush; ``settle`` gets each answered request's outcome."""
        return Dispatch(self, settle)


class Dispatch:
    """One flush's requests. Plans come in chunks (:meth:`add`): their deletes go
    out at once, their customers are packed into imports near the byte limit,
    across chunks, and each import goes out when the next customer would not fit
    (:meth:`finish` sends the last). Each answered request is settled at once, so
    a crash in a long flush sends again only what was not accepted."""

    def __init__(self, sender: Sender, settle: Settle) -> None:
        self._client = sender._client
        self._trigger = sender._trigger
        self._settle = settle
        self._parts: list[Part] = []
        self._size = 0
        envelope = len(import_body([], trigger_integrations=self._trigger))
        self._budget = sender._max_bytes - envelope - 16

    @property
    def packed(self) -> int:
        """Customers waiting for the next import."""
        return len(self._parts)

    async def add(
        self, plan: Plan, *, merge: bool, in_pending_import: Callable[[set[DocRef]], bool]
    ) -> None:
        """Send the plan's deletes; pack its customers (or, with ``merge`` and a single
        document no pending import carries, send it as a merge)."""
        upserted = {id(u.owed) for g in plan.groups for u in g.upserts}
        for delete in plan.deletes:
            await self._delete(
                delete, alone=delete.owed is not None and id(delete.owed) not in upserted
            )
        group = single_merge(plan) if merge and not self._parts else None
        if group is not None and not in_pending_import({u.ref for u in group.upserts}):
            await self._merge(group)
            return
        for group in plan.groups:
            part = part_of(group)
            if self._parts and self._size + len(part.body) + 1 > self._budget:
                await self._send_packed()
            self._parts.append(part)
            self._size += len(part.body) + 1

    async def finish(self) -> None:
        if self._parts:
            await self._send_packed()

    async def _send_packed(self) -> None:
        parts, self._parts, self._size = self._parts, [], 0
        await self._send_import(parts)

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

    async def _send_import(self, parts: Sequence[Part]) -> bool:
        """Send an import of these parts; a refusal splits it, down to the culprit.
        Returns whether it went out whole."""
        outcome = Outcome()
        outcome.requests["import"] += 1
        try:
            answer = await self._client.send(
                "import", import_body(parts, trigger_integrations=self._trigger)
            )
        except (ApiTooLarge, ApiRejected) as exc:
            self._report(outcome)
            if len(parts) == 1:
                await self._isolate(parts[0], exc)
                return False
            half = len(parts) // 2
            log.info("import of %d customers refused (%s): splitting", len(parts), exc.status)
            await self._send_import(parts[:half])
            await self._send_import(parts[half:])
            return False
        except BaseException:
            self._report(outcome)  # counted: it went out, or was cut short
            raise
        self._accepted(outcome, parts, answer)
        return True

    def _accepted(self, outcome: Outcome, parts: Sequence[Part], answer: dict[str, Any]) -> None:
        """An import the API accepted: what it carried, and its process to check."""
        carried: dict[DocRef, str | None] = {}
        for part in parts:
            # The container customer is written too, even when it did not change.
            carried.setdefault(part.container, part.container_hash)
            if part.container_hash is not None:
                outcome.accepted[part.container] = part.container_hash
            for upsert in part.upserts:
                carried[upsert.ref] = upsert.hash
                outcome.accepted[upsert.ref] = upsert.hash
                outcome.done.append(upsert.owed)
        try:
            process_id: str | None = str(import_process_id(answer))
        except ValueError:
            log.warning("the API accepted an import without a processId: it cannot be checked")
            process_id = None
        outcome.imports.append(SentImport(process_id, carried))
        outcome.bytes = sum(len(p.body) for p in parts)
        self._report(outcome)

    async def _isolate(self, part: Part, refusal: ApiTooLarge | ApiRejected) -> None:
        """One customer's part was refused: find the document the API refuses, send
        the others. Its orders are halved until one is alone with its customer; then
        the customer alone says which of the two is refused."""
        orders = [c for c in part.upserts if c.ref[0] is Kind.ORDER]
        if len(orders) > 1:
            half = len(orders) // 2
            log.info("a customer's %d orders refused (%s): splitting", len(orders), refusal.status)
            await self._send_import([with_orders(part, orders[:half])])
            await self._send_import([with_orders(part, orders[half:])])
            return
        culprits = part.upserts
        if orders:
            alone = with_orders(part, [])
            # The customer without the order: refused too, and the customer is the culprit
            # (its orders cannot go without it); accepted, and the order is.
            if await self._send_customer_alone(alone):
                culprits = tuple(orders)
        outcome = Outcome()
        for upsert in culprits:
            reason = f"import rejected: {refusal}"
            outcome.dead.append(DeadDoc(upsert.ref, upsert.owed, reason, part.body))
        self._report(outcome)

    async def _send_customer_alone(self, part: Part) -> bool:
        """The customer of a refused part without its orders; whether it was accepted
        (a refusal dead-letters the customer and the orders, by the caller)."""
        outcome = Outcome()
        outcome.requests["import"] += 1
        try:
            answer = await self._client.send(
                "import", import_body([part], trigger_integrations=self._trigger)
            )
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
