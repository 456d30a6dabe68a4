#!/usr/bin/env bash
# Prepares the primary for streaming replication. The postgres image runs the
# files in /docker-entrypoint-initdb.d once, when it initialises an empty data
# directory, against a temporary server reachable only through the local socket.
#
# It creates the replication role, one physical replication slot per replica (so
# the primary keeps the WAL a replica has not received yet), and lets the role
# connect for replication over the network.
#
# docker-entrypoint.sh sources this file when it is not executable, so it must
# not call exit or relax shell options; with `set -e` (already on in the
# entrypoint) any failing command aborts the initialisation.
set -e

: "${REPLICATION_USER:=replicator}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set on the primary}"
: "${REPLICATION_SLOTS:=replica1 replica2}"

# psql variables (:"name" and :'value') quote the role name and the password.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v repl_user="$REPLICATION_USER" -v repl_password="$REPLICATION_PASSWORD" <<'EOSQL'
CREATE ROLE :"repl_user" WITH REPLICATION LOGIN PASSWORD :'repl_password';
EOSQL

for slot in $REPLICATION_SLOTS; do
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
		-v slot="$slot" <<'EOSQL'
SELECT pg_create_physical_replication_slot(:'slot');
EOSQL
done

# "all" in the database column does not match replication connections: they
# need their own line. The server started after initialisation reads it.
echo "host replication $REPLICATION_USER all scram-sha-256" >>"$PGDATA/pg_hba.conf"
