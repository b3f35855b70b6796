"""End-to-end runs with real PostgreSQL or MariaDB, Debezium, Kafka Connect and (for
Avro) a schema registry (see docs/debezium.md)."""
