"""A batch's writes: rows, the documents they touch, what Rfmcube holds forgotten
where it is no longer known."""

from __future__ import annotations

from consumer.state.batch import open_batch
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from schemas.debezium import Op
from schemas.entities import Kind
from testkit.builders import change as _change
from testkit.builders import customer_row, item_row, order_row


def test_an_item_moved_to_another_order_touches_both_orders() -> None:
    obligations = Obligations(StateStore(":memory:"))
    with open_batch(obligations) as batch:
        for number, (kind, row) in enumerate(
            [
                ("customer", customer_row(1, "a@x.it")),
                ("order", order_row(10, 1)),
                ("order", order_row(11, 1)),
                ("item", item_row(100, 10)),
            ]
        ):
            batch.apply(_change(kind, row, number))
    with open_batch(obligations) as batch:
        touches = batch.apply(_change("item", item_row(100, 11), 4, Op.UPDATE))
    assert {t.doc for t in touches} == {(Kind.ORDER, "10"), (Kind.ORDER, "11")}


def test_rows_only_forgets_the_hashes_of_what_it_touches_when_asked() -> None:
    store = StateStore(":memory:")
    obligations = Obligations(store)
    with open_batch(obligations, owe=False) as batch:
        batch.apply(_change("customer", customer_row(1, "a@x.it"), 0))
        batch.apply(_change("customer", customer_row(2, "b@x.it"), 1))
    store.set_accepted({(Kind.CUSTOMER, "1"): "h1", (Kind.CUSTOMER, "2"): "h2"})
    with open_batch(obligations, owe=False, forget_accepted=True) as batch:
        batch.apply(_change("customer", customer_row(1, "a@x.it", phone="1"), 2, Op.UPDATE))
    assert store.accepted_hash((Kind.CUSTOMER, "1")) is None
    assert store.accepted_hash((Kind.CUSTOMER, "2")) == "h2"
    assert obligations.owed_count() == 0
