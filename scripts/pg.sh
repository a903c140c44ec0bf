#!/usr/bin/env bash
# A PostgreSQL of the project's own for a shared Pulumi state backend (tests, or a small team's host).
#
#   bash scripts/pg.sh start   # initdb on first use, start on 127.0.0.1 (idempotent), create the database
#   bash scripts/pg.sh url     # print the backend URL: PULUMI_BACKEND_URL=$(bash scripts/pg.sh url)
#   bash scripts/pg.sh stop    # stop the server this script started (by the PID in its pid file)
#
# Debian's PostgreSQL 15 (`make deps`), its own data dir $HACLUSTER_PG_DIR (default .pg/, git-ignored),
# port $HACLUSTER_PG_PORT (default 55432), TCP on 127.0.0.1 only, no unix socket, scram-sha-256 for
# every connection. Database `pulumi`, role `hacluster`, password generated once (.pg/password).
# The server runs as user `postgres` when this runs as root (PostgreSQL refuses to run as root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR=${HACLUSTER_PG_DIR:-$ROOT/.pg}
PORT=${HACLUSTER_PG_PORT:-55432}
BIN=${HACLUSTER_PG_BIN:-/usr/lib/postgresql/15/bin}
DATA=$DIR/data
PWFILE=$DIR/password
LOG=$DIR/server.log
DB=pulumi
ROLE=hacluster

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

as_owner() { # run as the data dir's owner: postgres when we are root
  if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi
}

pid() { # the postmaster's PID, when it runs from our data dir
  local p
  [[ -f $DATA/postmaster.pid ]] || return 1
  p=$(head -n1 "$DATA/postmaster.pid")
  [[ $p =~ ^[0-9]+$ ]] && [[ -d /proc/$p ]] || return 1
  # a stale pid file whose number was reused by another process is not ours
  local cmd; cmd=$(tr '\0' ' ' <"/proc/$p/cmdline")
  [[ $cmd == "$BIN/postgres "* && $cmd == *" $DATA "* ]] || return 1
  echo "$p"
}

url() { echo "postgres://$ROLE:$(cat "$PWFILE")@127.0.0.1:$PORT/$DB?sslmode=disable"; }

start() {
  [[ -x $BIN/postgres ]] || { echo "pg: $BIN/postgres missing: run make deps (Debian's postgresql)" >&2; exit 1; }
  mkdir -p "$DIR"
  if [[ ! -f $DATA/PG_VERSION ]]; then
    umask 077
    [[ -s $PWFILE ]] || od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$PWFILE"
    mkdir -p "$DATA"
    if ((EUID == 0)); then chown postgres: "$DATA"; fi
    # initdb reads the password from a file its user can read: a copy, removed at once
    local pw; pw=$(mktemp "$DIR/.pw.XXXXXX")
    cp "$PWFILE" "$pw"
    if ((EUID == 0)); then chown postgres: "$pw"; fi
    as_owner "$BIN/initdb" -D "$DATA" -U "$ROLE" --pwfile="$pw" --auth=scram-sha-256 -E UTF8 >"$DIR/initdb.log" \
      || { rm -f "$pw"; echo "pg: initdb failed, see $DIR/initdb.log" >&2; exit 1; }
    rm -f "$pw"
  fi
  if pid >/dev/null; then
    echo "pg: already running (pid $(pid)) on 127.0.0.1:$PORT"
  else
    touch "$LOG"
    if ((EUID == 0)); then chown postgres: "$LOG"; fi
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=''" >/dev/null \
      || { echo "pg: start failed, last log lines:" >&2; tail -n5 "$LOG" >&2; exit 1; }
    echo "pg: started (pid $(pid)) on 127.0.0.1:$PORT, data $DATA"
  fi
  if [[ -z $(PGPASSWORD=$(cat "$PWFILE") "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d postgres -Atc \
      "SELECT 1 FROM pg_database WHERE datname = '$DB'") ]]; then
    PGPASSWORD=$(cat "$PWFILE") "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$ROLE" "$DB"
  fi
}

stop() {
  local p
  if ! p=$(pid); then echo "pg: not running"; return 0; fi
  kill -INT "$p"  # fast shutdown: ends the sessions, writes a checkpoint
  for _ in $(seq 1 300); do
    [[ -d /proc/$p ]] || { echo "pg: stopped (pid $p)"; return 0; }
    sleep 0.1
  done
  echo "pg: pid $p still running after 30 s (see $LOG)" >&2
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) [[ -s $PWFILE ]] || { echo "pg: no password yet: run $0 start" >&2; exit 1; }; url ;;
  -h|--help) usage ;;
  *) usage 2 ;;
esac
