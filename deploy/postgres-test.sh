#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite.
#
#   eval "$(deploy/postgres-test.sh)"        # start (or reuse) it, export JIP_TEST_POSTGRES_URL
#   deploy/postgres-test.sh stop             # stop it and delete its data
#
# The cluster lives in its own directory (JIP_PG_DIR, default /tmp/jip-postgres-test) on
# its own port (JIP_PG_PORT, default 55432), listens on 127.0.0.1 only, and never touches
# the distribution's clusters (pg_ctlcluster's 15/main may be running or not). It creates
# the role `jip` with CREATEDB, so each test can create and drop its own database, and the
# database `jip_test`. Running it again reuses what is there. As root it runs PostgreSQL as
# the `postgres` user; as any other user, as that user. Only the export line goes to
# stdout; progress goes to stderr.
set -euo pipefail

PG_DIR="${JIP_PG_DIR:-/tmp/jip-postgres-test}"
PG_PORT="${JIP_PG_PORT:-55432}"
PG_USER=jip
PG_PASSWORD=jip
PG_DATABASE=jip_test
DATA="$PG_DIR/data"
SOCKET="$PG_DIR/socket"
LOG="$PG_DIR/postgres.log"

say() { echo "postgres-test: $*" >&2; }
die() { say "$*"; exit 1; }

find_bindir() {
  local candidate
  if [[ -n "${JIP_PG_BINDIR:-}" ]]; then echo "$JIP_PG_BINDIR"; return; fi
  # Prefer 15 (the version the cluster shape is tested with), else the newest installed.
  for candidate in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$candidate/initdb" ]]; then echo "$candidate"; return; fi
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  die "no PostgreSQL server binaries found: install the postgresql package (apt-get install postgresql)"
}

BIN="$(find_bindir)"

# Run a PostgreSQL program as the cluster's owner (initdb refuses to run as root).
if [[ "$(id -u)" -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || die "user 'postgres' is missing: install the postgresql package"
  OWNER=postgres
  as_owner() { runuser -u postgres -- "$@"; }
else
  OWNER="$(id -un)"
  as_owner() { "$@"; }
fi

psql_admin() {
  as_owner "$BIN/psql" -h "$SOCKET" -p "$PG_PORT" -U "$OWNER" -d postgres \
    -v ON_ERROR_STOP=1 -qAt "$@"
}

running() {
  as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

stop_cluster() {
  if [[ -d "$DATA" ]] && running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
  fi
  rm -rf "$PG_DIR"
  say "stopped and removed $PG_DIR"
}

start_cluster() {
  mkdir -p "$PG_DIR"
  chmod 0755 "$PG_DIR"
  if [[ "$OWNER" == postgres ]]; then chown postgres: "$PG_DIR"; fi
  if [[ ! -s "$DATA/PG_VERSION" ]]; then
    rm -rf "$DATA"
    say "initdb in $DATA ($(as_owner "$BIN/postgres" --version))"
    as_owner mkdir -p "$DATA" "$SOCKET"
    # Local socket: peer (only the owner gets in as superuser); TCP: passwords.
    as_owner "$BIN/initdb" -D "$DATA" -U "$OWNER" --auth-local=peer \
      --auth-host=scram-sha-256 --encoding=UTF8 --locale=C >"$PG_DIR/initdb.log" 2>&1 \
      || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  fi
  as_owner mkdir -p "$SOCKET"
  if running; then
    say "reusing the cluster running in $DATA"
  else
    # Test settings: durability traded for speed; the data is thrown away anyway.
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start -o \
      "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$SOCKET \
       -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      >&2 || { tail -n 30 "$LOG" >&2; die "PostgreSQL did not start (log: $LOG)"; }
  fi
  psql_admin <<SQL
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') AS new_role \gset
\if :new_role
CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
\else
ALTER ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
\endif
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE') AS new_db \gset
\if :new_db
CREATE DATABASE $PG_DATABASE OWNER $PG_USER;
\endif
SQL
  say "ready on 127.0.0.1:$PG_PORT"
  echo "export JIP_TEST_POSTGRES_URL=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DATABASE"
}

case "${1:-start}" in
  start) start_cluster ;;
  stop) stop_cluster ;;
  *) die "usage: $0 [start|stop]" ;;
esac
