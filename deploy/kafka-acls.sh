#!/usr/bin/env bash
# The least-privilege ACLs of tollgate's components, with Kafka's own `kafka-acls` tool, for a
# cluster with an authorizer and `allow.everyone.if.no.acl.found=false`. Each component has a
# principal of its own:
#
#   worker          `tollgate run`: reads its inputs, the reference topics and its changelog;
#                   writes its outputs, the dead letters and its changelog; reads and writes
#                   the ownership topic (the tenant API's directory); its consumer group
#                   (and the `<group>-*` groups of its readers); its transactional ids.
#   admin           `tollgate admin`: creates the topics, publishes reference data, funds tenants.
#   producer        call controllers and `tollgate produce`: writes the two input topics only.
#   billing reader  downstream billing: reads rated usage, in consumer groups of its own.
#
# Every producer of tollgate is idempotent: besides Write on its topics, brokers before
# Kafka 2.8 also want IdempotentWrite on the cluster, granted at the end.
#
# Usage (the defaults are tollgate's defaults; see deploy/README.md, "Security"):
#   BOOTSTRAP=kafka:9093 COMMAND_CONFIG=admin-client.properties deploy/kafka-acls.sh
#
# KAFKA_ACLS is the tool (default `kafka-acls.sh` on the PATH); COMMAND_CONFIG a client
# properties file for it (the cluster administrator's credentials). The tests run this very
# script against a real broker (crates/tollgate/tests/security.rs).
set -euo pipefail

: "${BOOTSTRAP:?set BOOTSTRAP to the brokers (host:port)}"
KAFKA_ACLS=${KAFKA_ACLS:-kafka-acls.sh}
WORKER=${WORKER:-User:tollgate-worker}
ADMIN=${ADMIN:-User:tollgate-admin}
PRODUCER=${PRODUCER:-User:tollgate-producer}
BILLING=${BILLING:-User:billing-reader}
# [worker] group_id and transactional_id_prefix: transactional ids are <prefix>-<state>-<partition>
# and <prefix>-<state>-<partition>.1 (<state>: the changelog topic, STATE below).
GROUP=${GROUP:-tollgate}
TRANSACTIONAL_ID_PREFIX=${TRANSACTIONAL_ID_PREFIX:-tollgate}
BILLING_GROUP_PREFIX=${BILLING_GROUP_PREFIX:-billing}
# [worker.topics]
CALL_LEGS=${CALL_LEGS:-tollgate.call-legs.v1}
CREDIT_COMMANDS=${CREDIT_COMMANDS:-tollgate.credit-commands.v1}
RATED_USAGE=${RATED_USAGE:-tollgate.rated-usage.v1}
LEG_DECISIONS=${LEG_DECISIONS:-tollgate.leg-decisions.v1}
CREDIT_EVENTS=${CREDIT_EVENTS:-tollgate.credit-events.v1}
DEAD_LETTER=${DEAD_LETTER:-tollgate.dead-letter.v1}
LEDGER_MOVEMENTS=${LEDGER_MOVEMENTS:-tollgate.ledger-movements.v1}
STATE=${STATE:-tollgate.state.v1}
TENANTS=${TENANTS:-tollgate.tenants.v1}
USERS=${USERS:-tollgate.users.v1}
RATE_CARDS=${RATE_CARDS:-tollgate.rate-cards.v1}
OWNERSHIP=${OWNERSHIP:-tollgate.ownership.v1}

acl() {
  $KAFKA_ACLS --bootstrap-server "$BOOTSTRAP" ${COMMAND_CONFIG:+--command-config "$COMMAND_CONFIG"} --add "$@" >/dev/null
}

# worker: read the inputs, the reference data and its changelog (restore) ...
acl --allow-principal "$WORKER" --operation Read \
  --topic "$CALL_LEGS" --topic "$CREDIT_COMMANDS" --topic "$TENANTS" --topic "$USERS" --topic "$RATE_CARDS" --topic "$STATE" \
  --topic "$OWNERSHIP"
# ... write the outputs (the debit trail too, written only when `ledger_movements` is on),
# the dead letters and its changelog ...
acl --allow-principal "$WORKER" --operation Write \
  --topic "$RATED_USAGE" --topic "$LEG_DECISIONS" --topic "$CREDIT_EVENTS" --topic "$LEDGER_MOVEMENTS" \
  --topic "$DEAD_LETTER" --topic "$STATE" --topic "$OWNERSHIP"
# ... the settings of its changelog and reference topics (it refuses to start on one that is
# not compacted, or warns that it cannot tell) ...
acl --allow-principal "$WORKER" --operation DescribeConfigs \
  --topic "$TENANTS" --topic "$USERS" --topic "$RATE_CARDS" --topic "$STATE"
# ... its consumer group, and its readers' groups <group>-reference, <group>-restore, ...
acl --allow-principal "$WORKER" --operation Read --resource-pattern-type prefixed --group "$GROUP"
# ... and its transactional ids, two per changelog partition.
acl --allow-principal "$WORKER" --operation Write --operation Describe \
  --resource-pattern-type prefixed --transactional-id "$TRANSACTIONAL_ID_PREFIX-$STATE-"

# admin: create the topics, publish reference data, fund tenants.
acl --allow-principal "$ADMIN" --operation Create --operation Describe \
  --topic "$CALL_LEGS" --topic "$CREDIT_COMMANDS" --topic "$RATED_USAGE" --topic "$LEG_DECISIONS" \
  --topic "$CREDIT_EVENTS" --topic "$LEDGER_MOVEMENTS" --topic "$DEAD_LETTER" --topic "$STATE" --topic "$TENANTS" \
  --topic "$USERS" --topic "$RATE_CARDS" --topic "$OWNERSHIP"
acl --allow-principal "$ADMIN" --operation Write \
  --topic "$TENANTS" --topic "$USERS" --topic "$RATE_CARDS" --topic "$CREDIT_COMMANDS"
# `admin fund` and `admin adjust` read the tenants first, to send nothing a worker would refuse.
acl --allow-principal "$ADMIN" --operation Read --topic "$TENANTS"
acl --allow-principal "$ADMIN" --operation Read --group "$GROUP-admin-credit"

# producer: the two inputs, nothing else (not the changelog, not the outputs).
acl --allow-principal "$PRODUCER" --operation Write --topic "$CALL_LEGS" --topic "$CREDIT_COMMANDS"

# billing reader: rated usage, in its own groups.
acl --allow-principal "$BILLING" --operation Read --topic "$RATED_USAGE"
acl --allow-principal "$BILLING" --operation Read --resource-pattern-type prefixed --group "$BILLING_GROUP_PREFIX"

# Idempotent producers (brokers before 2.8).
acl --allow-principal "$WORKER" --allow-principal "$ADMIN" --allow-principal "$PRODUCER" \
  --operation IdempotentWrite --cluster
