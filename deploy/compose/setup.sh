#!/bin/sh
# docker-compose.yml's one-shot set-up, run in the Debezium Connect image once
# Kafka and Connect are healthy: the topics, then the shop's connector,
# registered and RUNNING. Exits non-zero on any failure, so that rfmcube-cdc
# (which waits for its successful completion) never starts without them.
set -eu
bootstrap=kafka:9092
connect=http://connect:8083
name=shop-connector

# The shop's topics, compacted (the service rebuilds its store from them), and
# the dead-letter topic: made here so the service finds them at start-up.
for table in customers orders order_items; do
  /kafka/bin/kafka-topics.sh --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "shop.public.$table" --partitions 3 --replication-factor 1 \
    --config cleanup.policy=compact
done
/kafka/bin/kafka-topics.sh --bootstrap-server "$bootstrap" --create --if-not-exists \
  --topic rfmcube-cdc.dead-letters --partitions 1 --replication-factor 1

curl -fsS -X PUT -H 'content-type: application/json' \
  --data @/compose/connector.json "$connect/connectors/$name/config" >/dev/null

tries=0
while [ "$tries" -lt 60 ]; do
  status=$(curl -fsS "$connect/connectors/$name/status" || true)
  case "$status" in
    *'"state":"FAILED"'*) echo "connector $name failed: $status" >&2; exit 1 ;;
    *'"tasks":[{"id":0,"state":"RUNNING"'*) echo "connector $name is running"; exit 0 ;;
  esac
  tries=$((tries + 1))
  sleep 2
done
echo "connector $name is not RUNNING after 120 s: $status" >&2
exit 1
