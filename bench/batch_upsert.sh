#!/bin/sh
# batch_upsert_contacts throughput (SPEC §8) against database <db>, which
# must have migrations 0001..0007 applied:
#
#   bench/batch_upsert.sh [<db>|-] [batches=10] [batch_size=10000] [clients=1]
#
# One client: batch_upsert_contacts (insert, then update) and the plain
# INSERT ... ON CONFLICT DO UPDATE baseline, with rows/s and the ratio.
# Several clients: that many sessions run batch_upsert_contacts at once on
# their own keap_ids; prints each and the sum of their rows/s.
# Connection: PGHOST / PGPORT / PGUSER as usual (default 127.0.0.1, postgres;
# the bench runs CHECKPOINT-free but needs to write the synced tables).
#
# With no <db> (or "-"), a scratch database is created, migrated with
# `syncbridge migrate`, measured and dropped:
#
#   bench/batch_upsert.sh
set -eu
db=${1:--}
if [ "$db" = "-" ]; then
    db="syncbridge_bench_upsert_$$"
    admin() { psql -X -q -h "${PGHOST:-127.0.0.1}" -U "${PGUSER:-postgres}" -d postgres -c "$1"; }
    admin "CREATE DATABASE $db"
    trap 'admin "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
    (cd "$(dirname "$0")/.." && DATABASE_URL="postgres://${PGUSER:-postgres}@${PGHOST:-127.0.0.1}:${PGPORT:-5432}/$db" \
        cargo run -q --release -- migrate >/dev/null)
fi
batches=${2:-10}
batch_size=${3:-10000}
clients=${4:-1}
here=$(cd "$(dirname "$0")" && pwd)
psql_bench() {
    psql -X -q -h "${PGHOST:-127.0.0.1}" -U "${PGUSER:-postgres}" -d "$db" \
        -v batches="$batches" -v batch_size="$batch_size" "$@" -f "$here/batch_upsert.sql"
}

if [ "$clients" -le 1 ]; then
    psql_bench | grep -v '^RESULT|'
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ "${1:--}" = "-" ] && admin "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
# Every client generates its batches, then waits for the same instant.
start_at=$(date -u -d "+$((5 + batch_size * batches * clients / 100000)) seconds" '+%Y-%m-%d %H:%M:%S+00')
base=$(date +%s)
i=1
while [ "$i" -le "$clients" ]; do
    psql_bench -v phases=fn -v run="$base-c$i" -v start_at="$start_at" > "$tmp/client$i" 2>&1 &
    i=$((i + 1))
done
wait
echo "batch_upsert_contacts, $clients concurrent clients x $batches batches x $batch_size rows:"
cat "$tmp"/client* | grep '^RESULT|' | awk -F'|' '
    { rate = $3 / $4; printf "  %-32s %8d rows %8.3f s %8.0f rows/s\n", $2, $3, $4, rate;
      sum[$2] += rate }
    END { for (p in sum) printf "  total %-26s %26.0f rows/s\n", p, sum[p] }'
if grep -l 'ERROR' "$tmp"/client* >/dev/null 2>&1; then
    grep -h 'ERROR' "$tmp"/client* >&2
    exit 1
fi
