-- A few rows of the reference shop, so that `docker compose up` shows the
-- chain at work at once: Debezium's snapshot reads them, rfmcube-cdc sends
-- them to the emulator. Runs after e2e/shop.sql (the schema).
INSERT INTO customers (id, email, first_name, last_name, phone, password_hash, newsletter, created_at, updated_at) VALUES
    (1, 'ada@example.com', 'Ada', 'Lovelace', '+39 02 0000001', 'never-sent', true, '2024-01-10 09:00:00+00', '2024-01-10 09:00:00+00'),
    (2, 'alan@example.com', 'Alan', 'Turing', NULL, 'never-sent', false, '2024-02-01 12:30:00+00', '2024-02-01 12:30:00+00');
INSERT INTO orders (id, customer_id, customer_email, status, status_label, amount, currency, delivery_province, created_at, updated_at) VALUES
    (10, 1, NULL, 'paid', 'Paid', 59.90, 'EUR', 'MI', '2024-03-01 10:00:00+00', '2024-03-01 10:05:00+00'),
    (11, NULL, 'guest@example.net', 'shipped', 'Shipped', 12.50, 'EUR', 'TO', '2024-03-02 16:00:00+00', '2024-03-03 08:00:00+00');
INSERT INTO order_items (id, order_id, product_id, sku, brand, quantity, unit_price) VALUES
    (100, 10, 7, 'TEA-01', 'Leaf', 2, 19.95),
    (101, 10, 8, 'CUP-02', 'Clay', 1, 20.00),
    (102, 11, 9, 'PEN-03', 'Ink', 5, 2.50);
