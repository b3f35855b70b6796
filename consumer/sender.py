"""The sender: a plan's requests go out, and answers become an outcome.

Deletes first, one by one; then one merge or packed imports (see
:mod:`consumer.packing`). A 416 splits an import in halves; a 400/422 bisects
it down to the rejected customer, which is dead-lettered with the API's
message while the rest goes out. 5xx, timeouts and 429s are retried by the
client (:mod:`consumer.api`), forever, without committing anything.

Imports are asynchronous on Rfmcube's side while merges and deletes are not:
a merge of a document a pending import carries is sent as an import instead
(imports are applied in the order they were accepted); the planner holds a
delete back while such an import is pending. Every accepted import is
reported with what it carried, so that its process is checked later
(:mod:`consumer.imports`).

The client is a :class:`Transport`: anything with ``send`` and ``process``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from consumer.errors import ApiRejected, ApiTooLarge
from consumer.obligations import OwedDoc
from consumer.packing import (
    ImportParts,
    delete_body,
    import_parts,
    merge_body,
    pack,
    single_merge,
)
from consumer.planner import CustomerGroup, Plan
from schemas.entities import CustomerIdentity, DocRef
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

    async def send(
        self, plan: Plan, *, in_pending_import: Callable[[set[DocRef]], bool]
    ) -> Outcome:
        outcome = Outcome()
        for delete in plan.deletes:
            body = delete_body(delete)
            try:
                await self._client.send("delete_customer", body)
            except ApiRejected as exc:
                outcome.dead.append(
                    DeadDoc(delete.ref, delete.owed, f"delete_customer rejected: {exc}", body)
                )
            else:
                outcome.deleted[delete.ref] = delete.identity
            finally:
                outcome.requests["delete_customer"] += 1
        group = single_merge(plan)
        if group is not None and not in_pending_import({u.ref for u in group.upserts}):
            await self._merge(group, outcome)
        elif plan.groups:
            parts = import_parts(plan.groups, trigger_integrations=self._trigger)
            budget = self._max_bytes - len(parts.body([])) - 16
            for chunk in pack([len(p) for p in parts.parts], budget):
                await self._send_import(chunk, parts, outcome)
        for dead in outcome.dead:
            if dead.owed is not None:
                outcome.done.append(dead.owed)
        upserted = {id(u.owed) for g in plan.groups for u in g.upserts}
        for delete in plan.deletes:
            # A delete alone settles its document; with an upsert after it, the upsert does.
            if (
                delete.owed is not None
                and delete.ref in outcome.deleted
                and id(delete.owed) not in upserted
            ):
                outcome.done.append(delete.owed)
        return outcome

    async def _merge(self, group: CustomerGroup, outcome: Outcome) -> None:
        (upsert,) = group.upserts
        call, body = merge_body(group, trigger_integrations=self._trigger)
        try:
            await self._client.send(call, body)
        except (ApiRejected, ApiTooLarge) as exc:
            outcome.dead.append(DeadDoc(upsert.ref, upsert.owed, f"{call} rejected: {exc}", body))
            return
        finally:
            outcome.requests[call] += 1
        outcome.accepted[upsert.ref] = upsert.hash
        outcome.done.append(upsert.owed)

    async def _send_import(
        self, chunk: Sequence[int], parts: ImportParts, outcome: Outcome
    ) -> None:
        body = parts.body(chunk)
        try:
            answer = await self._client.send("import", body)
        except (ApiTooLarge, ApiRejected) as exc:
            outcome.requests["import"] += 1
            if len(chunk) == 1:
                for upsert in parts.groups[chunk[0]].upserts:
                    outcome.dead.append(
                        DeadDoc(
                            upsert.ref,
                            upsert.owed,
                            f"import rejected: {exc}",
                            parts.parts[chunk[0]],
                        )
                    )
                return
            half = len(chunk) // 2
            log.info("import of %d customers refused (%s): splitting", len(chunk), exc.status)
            await self._send_import(chunk[:half], parts, outcome)
            await self._send_import(chunk[half:], parts, outcome)
            return
        outcome.requests["import"] += 1
        carried: dict[DocRef, str | None] = {}
        for i in chunk:
            group = parts.groups[i]
            # The container customer is written too, even when it did not change.
            carried.setdefault(group.container_ref, None)
            for upsert in group.upserts:
                carried[upsert.ref] = upsert.hash
                outcome.accepted[upsert.ref] = upsert.hash
                outcome.done.append(upsert.owed)
            if group.guest:
                carried[group.container_ref] = _container_hash(group)
                outcome.accepted[group.container_ref] = carried[group.container_ref] or ""
        try:
            process_id: str | None = str(import_process_id(answer))
        except ValueError:
            log.warning("the API accepted an import without a processId: it cannot be checked")
            process_id = None
        outcome.imports.append(SentImport(process_id, carried))


def _container_hash(group: CustomerGroup) -> str:
    from schemas.rfmcube import document_hash

    return document_hash(group.customer_doc)
