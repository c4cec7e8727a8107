#!/usr/bin/env bash
# Copies the jars of the Kafka broker that the real-broker tests start (tests/src/broker.rs)
# from Maven Central into a cache directory, once: `pom.xml` beside this script names them.
#
#   tests/kafka/fetch.sh            # into target/kafka-4.1.1/libs under the workspace root
#   TOLLGATE_KAFKA_LIBS=DIR tests/kafka/fetch.sh
#
# The cache is complete when it holds a copy of the pom.xml it was made from (`.pom.xml`),
# written last; then the script does nothing. A changed pom.xml fetches again. Concurrent runs
# (tests of several binaries starting brokers at once) wait for each other on a lock file.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
libs="${TOLLGATE_KAFKA_LIBS:-$root/target/kafka-4.1.1/libs}"
stamp="$libs/.pom.xml"

complete() { [ -f "$stamp" ] && cmp -s "$stamp" "$here/pom.xml"; }

complete && exit 0

mkdir -p "$(dirname "$libs")"
exec 9>"$libs.lock"
flock 9
complete && exit 0

# Into a fresh directory first, so that an interrupted download never looks complete.
partial="$libs.partial"
rm -rf "$partial"
echo "fetching the Kafka broker's jars into $libs" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! mvn -B -q --no-transfer-progress -f "$here/pom.xml" dependency:copy-dependencies -Dkafka.libs="$partial" >"$log" 2>&1; then
  cat "$log" >&2
  echo "fetch.sh: maven could not fetch the jars" >&2
  exit 1
fi
cp "$here/pom.xml" "$partial/.pom.xml"
rm -rf "$libs"
mv "$partial" "$libs"
echo "$(find "$libs" -name '*.jar' | wc -l) jars in $libs" >&2
