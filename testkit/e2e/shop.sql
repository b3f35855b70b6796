-- The reference shop schema (consumer/default_mapping.yaml, emulator/shop.py).
-- Loaded by e2e/database.py into a fresh database per run; Debezium's
-- connector captures customers, orders and order_items only.

CREATE TABLE customers (
    id            bigint PRIMARY KEY,
    email         text NOT NULL,
    first_name    text,
    last_name     text,
    phone         text,
    password_hash text,             -- never leaves the shop
    newsletter    boolean,
    notes         text,             -- large: stored out of line (TOAST)
    created_at    timestamptz,
    updated_at    timestamptz
);
-- Out of line and uncompressed: an update that leaves notes alone then makes
-- pgoutput send it as "unchanged TOAST" (REPLICA IDENTITY DEFAULT), which
-- Debezium writes as __debezium_unavailable_value.
ALTER TABLE customers ALTER COLUMN notes SET STORAGE EXTERNAL;

CREATE TABLE orders (
    id                bigint PRIMARY KEY,
    customer_id       bigint REFERENCES customers (id),  -- null for a guest checkout
    customer_email    text,                              -- a guest checkout's email
    status            text,
    status_label      text,
    amount            numeric(12, 2),
    currency          text,
    delivery_province text,
    created_at        timestamptz,
    updated_at        timestamptz
);

CREATE TABLE order_items (
    id         bigint PRIMARY KEY,
    order_id   bigint NOT NULL REFERENCES orders (id),
    product_id bigint,
    sku        text,
    brand      text,
    quantity   integer,
    unit_price numeric(12, 2)
);

-- Orders deleted on their own (not with their customer), as they were just
-- before the delete: Rfmcube keeps them with status "deleted". Not captured.
CREATE TABLE deleted_orders (LIKE orders);
