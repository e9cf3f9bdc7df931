#!/usr/bin/env bash
# Starts a loopback-only MariaDB for tests.
#
#   scripts/start-mariadb.sh DIR
#
# The data directory, the socket (DIR/sock), mariadb.log and mariadb.pid live
# in DIR. On success prints the server's pid (also its process-group id) on
# stdout and leaves it running; stop it with `kill -- -PID`. Running it again
# while that server is up just prints the same pid.
#
# MariaDB: 127.0.0.1:13306, user root without a password, binary log on (so
# that snapshots record a binlog/GTID position).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

(($# == 1)) || die "usage: $0 DIR"
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
PORT=13306
TIMEOUT_S=60

ping() { mariadb-admin --no-defaults --protocol=TCP -h 127.0.0.1 -P "$PORT" -uroot ping >/dev/null 2>&1; }

if [[ -s "$DIR/mariadb.pid" ]] && kill -0 "$(cat "$DIR/mariadb.pid")" 2>/dev/null && ping; then
	log "MariaDB already running on 127.0.0.1:$PORT (pid $(cat "$DIR/mariadb.pid"))"
	cat "$DIR/mariadb.pid"
	exit 0
fi
port_open "$PORT" && die "port 127.0.0.1:$PORT is already in use (another MariaDB? stop it first)"

if [[ ! -d "$DIR/data/mysql" ]]; then
	mariadb-install-db --no-defaults --datadir="$DIR/data" --user=root \
		--auth-root-authentication-method=normal --skip-test-db >"$DIR/install.log" 2>&1 ||
		{
			tail -n 40 "$DIR/install.log" >&2
			die "mariadb-install-db failed"
		}
fi

spawn_detached "$DIR/mariadb.pid" "$DIR/mariadb.log" \
	mariadbd --no-defaults --datadir="$DIR/data" --socket="$DIR/sock" --port="$PORT" \
	--bind-address=127.0.0.1 --user=root --log-bin="$DIR/data/binlog" --server-id=1

deadline=$((SECONDS + TIMEOUT_S))
pid=""
while ((SECONDS < deadline)); do
	[[ -z "$pid" && -s "$DIR/mariadb.pid" ]] && pid="$(cat "$DIR/mariadb.pid")"
	if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
		log "MariaDB exited during start-up; last lines of $DIR/mariadb.log:"
		tail -n 40 "$DIR/mariadb.log" >&2 || true
		exit 1
	fi
	if [[ -n "$pid" ]] && ping; then
		log "MariaDB ready on 127.0.0.1:$PORT (pid $pid, log $DIR/mariadb.log)"
		echo "$pid"
		exit 0
	fi
	sleep 0.3
done
log "MariaDB did not answer on 127.0.0.1:$PORT within ${TIMEOUT_S}s; last lines of $DIR/mariadb.log:"
tail -n 40 "$DIR/mariadb.log" >&2 || true
[[ -n "$pid" ]] && stop_pid "$pid" MariaDB
exit 1
