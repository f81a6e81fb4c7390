#!/usr/bin/env bash
# Start / stop a Prefect server and an MLflow tracking server on 127.0.0.1,
# with their state inside the project (.infra/). Then point the pipeline at them:
#   eval "$(infra/local-servers.sh env)"
#   make deploy && make worker        # scheduled retraining
#   make run                          # or dvc repro: stage runs go to the MLflow server
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/.infra
BIN=$ROOT/.venv/bin
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
export DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true
# MLflow 3's server also starts a job runner and task consumers (about 2 GB idle); the project runs no MLflow jobs
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
export PREFECT_HOME=$STATE/prefect

wait_for() {  # url name
  for _ in $(seq 1 90); do
    if curl -fsS "$1" >/dev/null 2>&1; then echo "$2 is up: $1"; return 0; fi
    sleep 1
  done
  echo "$2 did not come up; see $STATE/$2.log" >&2; return 1
}

case "${1:-}" in
  start)
    mkdir -p "$STATE"
    [ -x "$BIN/prefect" ] || { echo "run 'make install' first" >&2; exit 1; }
    setsid "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
      --backend-store-uri "sqlite:///$STATE/mlflow.db" --artifacts-destination "$STATE/mlartifacts" \
      >"$STATE/mlflow.log" 2>&1 & echo $! >"$STATE/mlflow.pid"
    setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" \
      >"$STATE/prefect.log" 2>&1 & echo $! >"$STATE/prefect.pid"
    wait_for "http://127.0.0.1:$MLFLOW_PORT/health" mlflow
    wait_for "http://127.0.0.1:$PREFECT_PORT/api/health" prefect
    ;;
  stop)
    for name in prefect mlflow; do
      if [ -f "$STATE/$name.pid" ]; then
        kill -- "-$(cat "$STATE/$name.pid")" 2>/dev/null || true
        rm -f "$STATE/$name.pid"; echo "$name stopped"
      fi
    done
    ;;
  env)
    echo "export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api"
    echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
    ;;
  *)
    echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
