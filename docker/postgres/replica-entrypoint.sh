#!/usr/bin/env bash
# Entry point of a streaming replica. Invoked as `bash replica-entrypoint.sh
# postgres -c ...`, so the file mode does not matter.
#
# On first start (no PG_VERSION in PGDATA) it clones the primary with
# pg_basebackup, retrying until the primary accepts the replication role. -R
# writes standby.signal and primary_conninfo, -S makes the replica stream
# through its own physical slot, -X stream copies the WAL written meanwhile.
# Then it hands over to the image's docker-entrypoint.sh, which skips initdb
# because the data directory is no longer empty and starts the server as the
# postgres user.
#
# A replica volume is bound to the primary it was cloned from: after removing
# the primary's volume, remove the replicas' volumes too (docker compose down -v).
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${PRIMARY_HOST:?PRIMARY_HOST must name the primary}"
: "${PRIMARY_PORT:=5432}"
: "${REPLICATION_USER:=replicator}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set}"
: "${REPLICA_SLOT:?REPLICA_SLOT must name a physical replication slot on the primary}"

# as_postgres runs a command as the postgres user, so that the files it creates
# belong to the server.
as_postgres() {
	if [ "$(id -u)" = 0 ]; then
		gosu postgres "$@"
	else
		"$@"
	fi
}

mkdir -p "$PGDATA"
if [ "$(id -u)" = 0 ]; then
	chown postgres:postgres "$PGDATA"
fi
chmod 0700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	echo "replica: cloning $PRIMARY_HOST:$PRIMARY_PORT through slot $REPLICA_SLOT into $PGDATA"
	# pg_basebackup wants an empty directory; a failed attempt may leave files.
	find "$PGDATA" -mindepth 1 -delete
	until PGPASSWORD="$REPLICATION_PASSWORD" as_postgres pg_basebackup \
		-h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" -w \
		-D "$PGDATA" -R -X stream -S "$REPLICA_SLOT" -c fast; do
		echo "replica: pg_basebackup from $PRIMARY_HOST failed; retrying in 2s" >&2
		find "$PGDATA" -mindepth 1 -delete
		sleep 2
	done
	echo "replica: base backup complete"
fi

if [ "$(id -u)" = 0 ]; then
	chown -R postgres:postgres "$PGDATA"
fi
chmod 0700 "$PGDATA"

exec docker-entrypoint.sh "$@"
