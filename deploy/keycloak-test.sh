#!/usr/bin/env bash
# A throwaway Keycloak server for the test suite (the cluster shape's identity tests).
#
#   eval "$(deploy/keycloak-test.sh)"    # start (or reuse) it, export JIP_TEST_KEYCLOAK_URL
#                                        # and the master realm's admin credentials
#   deploy/keycloak-test.sh stop         # stop it and delete its data
#
# No Keycloak download site is reachable from the test machines, but Maven Central is, and
# it serves Keycloak's own server distribution as org.keycloak:keycloak-quarkus-dist (a
# 169 MB zip). The first run fetches it once into JIP_KC_CACHE (default
# ~/.cache/jip/keycloak) with `mvn dependency:copy`; every start unpacks it afresh into
# JIP_KC_DIR (default /tmp/jip-keycloak-test), so each run begins with an empty H2
# database, and runs `bin/kc.sh start-dev` (plain HTTP, 127.0.0.1 only, a free port or
# JIP_KC_PORT) with a Temurin/OpenJDK 21+ found under /usr/lib/jvm (or JIP_KC_JAVA_HOME),
# beside the system's Java 17. The master realm's admin gets a random password, kept in
# JIP_KC_DIR (mode 0600). Running it again reuses a server that is still up. Only the
# export line goes to stdout; progress goes to stderr.
set -euo pipefail

say() { echo "keycloak-test: $*" >&2; }
die() { say "$*"; exit 1; }

VERSION="${JIP_KC_VERSION:-26.7.3}"
CACHE="${JIP_KC_CACHE:-$HOME/.cache/jip/keycloak}"
KC_DIR="${JIP_KC_DIR:-/tmp/jip-keycloak-test}"
HEAP="${JIP_KC_HEAP:-512m}"
TIMEOUT="${JIP_KC_TIMEOUT:-240}"
ADMIN="admin"
ZIP="$CACHE/keycloak-quarkus-dist-$VERSION.zip"
PID_FILE="$KC_DIR/server.pid"
PORT_FILE="$KC_DIR/server.port"
PASSWORD_FILE="$KC_DIR/admin.password"
LOG="$KC_DIR/server.log"

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH: $2"
}

# The newest JDK of at least 21 (Keycloak 26 refuses Java 17), JIP_KC_JAVA_HOME first.
find_java_home() {
  local best="" best_major=0 home major
  for home in ${JIP_KC_JAVA_HOME:-} ${JAVA_HOME:-} /usr/lib/jvm/*; do
    [[ -x "$home/bin/java" ]] || continue
    major="$("$home/bin/java" -XshowSettings:properties -version 2>&1 \
      | sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p')"
    [[ -n "$major" ]] || continue
    if [[ -n "${JIP_KC_JAVA_HOME:-}" && "$home" == "$JIP_KC_JAVA_HOME" && "$major" -ge 21 ]]; then
      echo "$home"; return
    fi
    if (( major >= 21 && major > best_major )); then best="$home"; best_major="$major"; fi
  done
  [[ -n "$best" ]] || die "no JDK 21 or newer under /usr/lib/jvm: install one (apt-get install temurin-21-jdk or openjdk-21-jdk-headless) or set JIP_KC_JAVA_HOME"
  echo "$best"
}

# Fetched once from Maven Central; kept in the cache across runs.
fetch() {
  [[ -s "$ZIP" ]] && return
  need mvn "install Maven (apt-get install maven), which fetches Keycloak from Maven Central"
  mkdir -p "$CACHE"
  say "fetching org.keycloak:keycloak-quarkus-dist:$VERSION (169 MB) from Maven Central into $CACHE"
  mvn -q -B --no-transfer-progress \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    "-Dartifact=org.keycloak:keycloak-quarkus-dist:$VERSION:zip" "-DoutputDirectory=$CACHE" \
    >"$CACHE/fetch.log" 2>&1 \
    || { tail -n 30 "$CACHE/fetch.log" >&2; die "the download failed (log: $CACHE/fetch.log)"; }
}

alive() {
  [[ -s "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

ready() {
  curl -fsS --max-time 5 "http://127.0.0.1:$1/realms/master/.well-known/openid-configuration" \
    2>/dev/null | grep -q '"issuer"'
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A ready answer must come from our server, not from another one already on that port.
port_taken() {
  python3 -c 'import socket, sys; sys.exit(socket.socket().connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"
}

exports() {
  echo "export JIP_TEST_KEYCLOAK_URL=http://127.0.0.1:$1 JIP_TEST_KEYCLOAK_ADMIN=$ADMIN JIP_TEST_KEYCLOAK_ADMIN_PASSWORD=$(cat "$PASSWORD_FILE")"
}

stop_server() {
  if alive; then
    local pid
    pid="$(cat "$PID_FILE")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; fi
  fi
  rm -rf "$KC_DIR"
  say "stopped and removed $KC_DIR"
}

start_server() {
  need curl "install curl (apt-get install curl)"
  need unzip "install unzip (apt-get install unzip)"
  if alive && ready "$(cat "$PORT_FILE")"; then
    say "reusing the server running on 127.0.0.1:$(cat "$PORT_FILE")"
    exports "$(cat "$PORT_FILE")"
    return
  fi
  if alive; then kill -KILL -- "-$(cat "$PID_FILE")" 2>/dev/null || true; fi
  local java_home port pid started home
  java_home="$(find_java_home)"
  fetch
  rm -rf "$KC_DIR"
  mkdir -p "$KC_DIR"
  chmod 700 "$KC_DIR"
  unzip -q "$ZIP" -d "$KC_DIR"
  home="$KC_DIR/keycloak-$VERSION"
  port="${JIP_KC_PORT:-$(free_port)}"
  if port_taken "$port"; then
    die "127.0.0.1:$port is already in use: set JIP_KC_PORT to a free port, or leave it unset"
  fi
  (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(18))' >"$PASSWORD_FILE")
  # Its own session, so that it outlives the shell that evals this script's output.
  JAVA_HOME="$java_home" JAVA_OPTS_KC_HEAP="-Xms64m -Xmx$HEAP" \
    KC_BOOTSTRAP_ADMIN_USERNAME="$ADMIN" KC_BOOTSTRAP_ADMIN_PASSWORD="$(cat "$PASSWORD_FILE")" \
    setsid "$home/bin/kc.sh" start-dev --http-host 127.0.0.1 --http-port "$port" \
    >"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  echo "$port" >"$PORT_FILE"
  started=$SECONDS
  say "starting Keycloak $VERSION with $java_home on 127.0.0.1:$port"
  until kill -0 "$pid" 2>/dev/null && ready "$port"; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$LOG" >&2; die "Keycloak exited (log: $LOG)"; }
    if (( SECONDS - started > TIMEOUT )); then
      tail -n 30 "$LOG" >&2
      kill -TERM -- "-$pid" 2>/dev/null || true
      die "no answer from 127.0.0.1:$port after ${TIMEOUT}s (log: $LOG; JIP_KC_TIMEOUT waits longer)"
    fi
    sleep 1
  done
  say "ready on 127.0.0.1:$port after $(( SECONDS - started ))s (pid $pid, log $LOG)"
  exports "$port"
}

case "${1:-start}" in
  start) start_server ;;
  stop) stop_server ;;
  *) die "usage: $0 [start|stop]" ;;
esac
