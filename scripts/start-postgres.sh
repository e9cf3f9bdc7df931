#!/usr/bin/env bash
# Starts a loopback-only PostgreSQL 15 for tests, as the `postgres` user.
#
#   scripts/start-postgres.sh DIR
#
# The cluster (DIR/data), its socket and postgres.log live in DIR. On success
# prints the postmaster's pid on stdout and leaves it running; stop it with
# `kill PID` (or pg_ctl stop). Running it again while that server is up just
# prints the same pid.
#
# PostgreSQL: 127.0.0.1:15432, user postgres, trust authentication.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

(($# == 1)) || die "usage: $0 DIR"
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
PORT=15432
BIN="${NFREPO_PG_BIN:-/usr/lib/postgresql/15/bin}"
[[ -x "$BIN/postgres" ]] || die "no PostgreSQL binaries in $BIN"

as_postgres=()
if ((EUID == 0)); then
	# The server refuses to run as root; DIR must be traversable by postgres.
	as_postgres=(runuser -u postgres --)
	if ! id postgres >/dev/null 2>&1; then
		log "creating system user postgres"
		useradd --system --no-create-home --shell /usr/sbin/nologin postgres
	fi
	chmod 755 "$DIR"
	chown postgres "$DIR"
fi

ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

if [[ -s "$DIR/data/postmaster.pid" ]] && kill -0 "$(head -n 1 "$DIR/data/postmaster.pid")" 2>/dev/null && ready; then
	log "PostgreSQL already running on 127.0.0.1:$PORT"
	head -n 1 "$DIR/data/postmaster.pid"
	exit 0
fi
port_open "$PORT" && die "port 127.0.0.1:$PORT is already in use (another PostgreSQL? stop it first)"

if [[ ! -s "$DIR/data/PG_VERSION" ]]; then
	"${as_postgres[@]}" "$BIN/initdb" -D "$DIR/data" -A trust -U postgres >"$DIR/initdb.log" 2>&1 ||
		{
			tail -n 40 "$DIR/initdb.log" >&2
			die "initdb failed"
		}
fi
"${as_postgres[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
	-o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1" start >&2 ||
	{
		tail -n 40 "$DIR/postgres.log" >&2 || true
		die "PostgreSQL did not start"
	}
ready || die "PostgreSQL started but does not answer on 127.0.0.1:$PORT"
log "PostgreSQL ready on 127.0.0.1:$PORT (log $DIR/postgres.log)"
head -n 1 "$DIR/data/postmaster.pid"
