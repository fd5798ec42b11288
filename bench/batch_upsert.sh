#!/bin/sh
# batch_upsert_contacts throughput (SPEC §8) against database <db>:
#   bench/batch_upsert.sh <db> [batches] [batch_size]
# <db> must have migrations 0001..0007 applied. Connection: the usual PG*
# variables (PGHOST, PGUSER, ...); defaults 127.0.0.1 / postgres.
set -eu
if [ $# -lt 1 ]; then
    echo "usage: $0 <db> [batches=10] [batch_size=10000]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
exec psql -X -q -h "${PGHOST:-127.0.0.1}" -U "${PGUSER:-postgres}" -d "$1" \
    -v batches="${2:-10}" -v batch_size="${3:-10000}" \
    -f "$here/batch_upsert.sql"
