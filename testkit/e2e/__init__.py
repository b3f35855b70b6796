"""End-to-end run with real PostgreSQL, Debezium and Kafka Connect (see docs/debezium.md)."""
