"""The contracts: Debezium change events in, Rfmcube documents out."""
