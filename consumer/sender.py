"""The sender: a plan becomes requests, and answers become outcomes.

Requests are the scarce resource (60 a minute), so everything a window holds
goes out in as few requests as the byte limit allows: customer deletes one by
one (the API has no bulk delete), then either one merge (when the window holds
a single document) or imports packed below ``max_request_bytes``. A 416 splits
an import in halves; a 400/422 bisects it down to the rejected customer, which
is dead-lettered with the API's message while the rest goes out.

Imports are asynchronous on Rfmcube's side while merges and deletes are not,
so a merge or delete must never overtake an import that carries the same
document: a merge of such a document is sent as an import instead (imports
are applied in the order they were accepted), and a delete first waits for the
import's process to finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from consumer.api import RfmcubeClient
from consumer.errors import ApiRejected, ApiTooLarge
from consumer.planner import CustomerGroup, Plan
from consumer.store import CustomerIdentity, DocRef
from schemas.entities import Kind
from schemas.rfmcube import (
    delete_customer_body,
    dumps,
    import_customer,
    merge_customer_body,
    merge_order_body,
)

log = logging.getLogger(__name__)

# An import's process is assumed finished this long after acceptance when we
# never polled it (acceptance mode "process_id"); "completed" mode polls.
IMPORT_SETTLE_SECONDS = 600.0
PROCESS_POLL_SECONDS = 1.0


@dataclass(slots=True)
class Outcome:
    accepted: dict[DocRef, str] = field(default_factory=dict)  # document → hash to remember
    deleted: list[DocRef] = field(default_factory=list)
    dead: list[tuple[DocRef, str, bytes]] = field(default_factory=list)  # reason, document
    retry: list[DocRef] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _PendingImport:
    refs: set[DocRef]
    accepted_at: float


class Sender:
    def __init__(
        self,
        client: RfmcubeClient,
        *,
        max_request_bytes: int,
        acceptance: Literal["process_id", "completed"] = "process_id",
        trigger_integrations: bool = False,
        clock: Any = time.monotonic,
    ) -> None:
        self._client = client
        self._max_bytes = max_request_bytes
        self._strict = acceptance == "completed"
        self._trigger = trigger_integrations
        self._clock = clock
        self._pending: dict[int, _PendingImport] = {}
        self.process_polls = 0

    async def send(self, plan: Plan) -> Outcome:
        outcome = Outcome()
        for ref, identity in plan.deletes:
            await self._delete(ref, identity, outcome)
        # A guest's container is rebuilt from all its orders, which only an import
        # writes; merges are for a single registered customer's document.
        if (
            plan.upsert_count() == 1
            and not plan.groups[0].guest
            and not self._in_pending_import(plan.groups[0])
        ):
            await self._merge(plan.groups[0], outcome)
        elif plan.groups:
            await self._import(plan.groups, outcome)
        return outcome

    # -- deletes and merges ---------------------------------------------

    async def _delete(self, ref: DocRef, who: CustomerIdentity, outcome: Outcome) -> None:
        await self._settle_imports_with(ref, outcome)
        body = dumps(delete_customer_body(id=who.id, email=who.email))
        try:
            await self._client.send("delete_customer", body)
        except ApiRejected as exc:
            outcome.dead.append((ref, f"delete_customer rejected: {exc}", body))
            return
        finally:
            outcome.requests["delete_customer"] += 1
        outcome.deleted.append(ref)

    async def _merge(self, group: CustomerGroup, outcome: Outcome) -> None:
        (upsert,) = group.upserts
        if group.customer is not None:
            call = "merge_customer"
            body = dumps(merge_customer_body(upsert.doc, trigger_integrations=self._trigger))
        else:
            call = "merge_order"
            body = dumps(
                merge_order_body(
                    upsert.doc,
                    customer_email=group.customer_email,
                    customer_id=group.customer_id,
                    trigger_integrations=self._trigger,
                )
            )
        try:
            await self._client.send(call, body)
        except (ApiRejected, ApiTooLarge) as exc:
            outcome.dead.append((upsert.ref, f"{call} rejected: {exc}", body))
            return
        finally:
            outcome.requests[call] += 1
        outcome.accepted[upsert.ref] = upsert.hash

    # -- imports ----------------------------------------------------------

    def _import_body(self, parts: Sequence[bytes]) -> bytes:
        head = (
            b'{"overwriteDescriptors":false,"triggerIntegrations":'
            + (b"true" if self._trigger else b"false")
            + b',"recalculateStats":false,"customers":['
        )
        return head + b",".join(parts) + b"]}"

    async def _import(self, groups: list[CustomerGroup], outcome: Outcome) -> None:
        # Each customer is serialized once; requests are concatenations of them.
        parts = [dumps(import_customer(g.customer_doc, [o.doc for o in g.orders])) for g in groups]
        budget = self._max_bytes - len(self._import_body([])) - 16
        chunk: list[int] = []
        size = 0
        for index, part in enumerate(parts):
            if chunk and size + len(part) + 1 > budget:
                await self._send_import(chunk, groups, parts, outcome)
                chunk, size = [], 0
            chunk.append(index)
            size += len(part) + 1
        if chunk:
            await self._send_import(chunk, groups, parts, outcome)

    async def _send_import(
        self,
        chunk: list[int],
        groups: list[CustomerGroup],
        parts: list[bytes],
        outcome: Outcome,
    ) -> None:
        body = self._import_body([parts[i] for i in chunk])
        try:
            answer = await self._client.send("import", body)
        except (ApiTooLarge, ApiRejected) as exc:
            outcome.requests["import"] += 1
            if len(chunk) == 1:
                group = groups[chunk[0]]
                for upsert in group.upserts:
                    outcome.dead.append((upsert.ref, f"import rejected: {exc}", parts[chunk[0]]))
                return
            half = len(chunk) // 2
            log.info("import of %d customers refused (%s): splitting", len(chunk), exc.status)
            await self._send_import(chunk[:half], groups, parts, outcome)
            await self._send_import(chunk[half:], groups, parts, outcome)
            return
        outcome.requests["import"] += 1
        refs = {u.ref for i in chunk for u in groups[i].upserts}
        # The container customer is written too, even when it did not change.
        refs |= {(Kind.CUSTOMER, key) for i in chunk if (key := groups[i].customer_id) is not None}
        process_id = int(answer["processId"])
        self._pending[process_id] = _PendingImport(refs, self._clock())
        if self._strict and not await self._wait_process(process_id, outcome):
            outcome.retry.extend(sorted(refs))
            return
        for i in chunk:
            for upsert in groups[i].upserts:
                outcome.accepted[upsert.ref] = upsert.hash

    # -- processes ------------------------------------------------------

    def _in_pending_import(self, group: CustomerGroup) -> bool:
        self._prune()
        refs = {u.ref for u in group.upserts}
        return any(refs & p.refs for p in self._pending.values())

    def _prune(self) -> None:
        horizon = self._clock() - IMPORT_SETTLE_SECONDS
        for pid in [pid for pid, p in self._pending.items() if p.accepted_at < horizon]:
            del self._pending[pid]

    async def _settle_imports_with(self, ref: DocRef, outcome: Outcome) -> None:
        self._prune()
        carrying = {pid: p.refs for pid, p in self._pending.items() if ref in p.refs}
        for pid, refs in sorted(carrying.items()):
            if not await self._wait_process(pid, outcome):
                # Failed: what it carried goes out again, from the store.
                outcome.retry.extend(sorted(refs - {ref}))

    async def check_a_pending_import(self, older_than: float) -> Outcome | None:
        """Poll the oldest import accepted more than ``older_than`` seconds ago
        (once); None when there is none. A failed one's documents come back in
        ``retry``: they are sent again from the store."""
        self._prune()
        due = self._clock() - older_than
        candidates = [pid for pid, p in self._pending.items() if p.accepted_at <= due]
        if not candidates:
            return None
        pid = min(candidates)
        outcome = Outcome()
        info = await self._client.process(pid)
        outcome.requests["processes"] += 1
        self.process_polls += 1
        status = info.get("status")
        if status == "completed":
            self._pending.pop(pid, None)
        elif status == "failed":
            log.warning("import process %s failed: its documents will be sent again", pid)
            outcome.retry.extend(sorted(self._pending.pop(pid).refs))
        else:
            self._pending[pid].accepted_at = self._clock()  # still running: look later
        return outcome

    async def _wait_process(self, process_id: int, outcome: Outcome) -> bool:
        """Poll until the process ends; True when it completed."""
        while True:
            info = await self._client.process(process_id)
            outcome.requests["processes"] += 1
            self.process_polls += 1
            status = info.get("status")
            if status == "completed":
                self._pending.pop(process_id, None)
                return True
            if status == "failed":
                log.warning(
                    "import process %s failed: its documents will be sent again", process_id
                )
                self._pending.pop(process_id, None)
                return False
            await asyncio.sleep(PROCESS_POLL_SECONDS)
