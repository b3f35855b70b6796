-- The reference shop on MariaDB, with the MySQL family's types: DECIMAL,
-- DATETIME (a wall clock: written in UTC) and TIMESTAMP (an instant, written
-- in the session's time zone), TINYINT(1), ENUM, JSON. The items' table is
-- order_lines, as PrestaShop-like shops name it: the runs' mapping
-- (testkit/e2e/mariadb.py) makes it the items entity. Loaded into a fresh
-- database per run; Debezium captures customers, orders and order_lines.

CREATE TABLE customers (
    id            BIGINT PRIMARY KEY,
    email         VARCHAR(255) NOT NULL,
    first_name    VARCHAR(100),
    last_name     VARCHAR(100),
    phone         VARCHAR(40),
    password_hash VARCHAR(255),                 -- never leaves the shop
    newsletter    TINYINT(1) NOT NULL DEFAULT 0,
    attributes    JSON,                         -- LONGTEXT + CHECK (JSON_VALID) in MariaDB
    created_at    DATETIME(6) NOT NULL,
    updated_at    TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);

CREATE TABLE orders (
    id                BIGINT PRIMARY KEY,
    customer_id       BIGINT NULL,              -- null for a guest checkout
    customer_email    VARCHAR(255),             -- a guest checkout's email
    status            ENUM('pending', 'paid', 'shipped', 'delivered', 'cancelled') NOT NULL,
    status_label      VARCHAR(100),
    amount            DECIMAL(12, 2) NOT NULL,
    currency          CHAR(3),
    delivery_province VARCHAR(100),
    created_at        DATETIME NOT NULL,
    updated_at        TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE order_lines (
    id         BIGINT PRIMARY KEY,
    order_id   BIGINT NOT NULL,
    product_id BIGINT,
    sku        VARCHAR(64),
    brand      VARCHAR(100),
    quantity   INT NOT NULL,
    unit_price DECIMAL(12, 2) NOT NULL
);

-- Orders deleted on their own (not with their customer), as they were just
-- before the delete: Rfmcube keeps them with status "deleted". Not captured.
CREATE TABLE deleted_orders LIKE orders;
