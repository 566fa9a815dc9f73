#!/usr/bin/env bash
# Flower's deployment engine on one machine: a SuperLink, N SuperNodes (one per client partition)
# and `flwr run` of this app for a few rounds — the same processes a real deployment runs on several
# machines (see README "Federated fine-tuning" for TLS and SuperNode authentication).
#   SERVER_RUN=runs/quickstart N=2 ROUNDS=2 OUT=runs/federated-deploy scripts/fed_deploy_localhost.sh [extra run-config]
# DATA_PATHS="/data/phone-0 /data/phone-1" gives each SuperNode its own ImageFolder (node config data-path, one
# path per node, no spaces in a path) instead of its partition of the synthetic plan.
# Ports are free ones picked at start (SUPERLINK_PORT=... fixes the SuperLink's); the SuperNodes and `flwr run`
# start only once the SuperLink answers, within READY_SECONDS (default 120).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN=${VENV_BIN:-$PWD/.venv/bin}
export PATH="$VENV_BIN:$PATH"
N=${N:-2}; ROUNDS=${ROUNDS:-2}; READY_SECONDS=${READY_SECONDS:-120}
OUT=${OUT:-runs/federated-deploy}; SERVER_RUN=${SERVER_RUN:-runs/quickstart}
EXTRA=${1:-}
read -r -a data_paths <<< "${DATA_PATHS:-}"
if [ "${#data_paths[@]}" -ne 0 ] && [ "${#data_paths[@]}" -ne "$N" ]; then
    echo "DATA_PATHS names ${#data_paths[@]} folder(s); expected one per SuperNode (N=$N)" >&2
    exit 2
fi
export FLWR_HOME; FLWR_HOME=$(mktemp -d)
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1  # else flwr installs deps per run (a CUDA torch)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$FLWR_HOME"; }
trap cleanup EXIT

# N + 1 ports the OS reports free, held open together so that they differ from one another.
read -r -a free_ports <<< "$("$VENV_BIN/python" - "$((N + 1))" <<'PY'
import socket
import sys

sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for sock in sockets:
    sock.bind(("127.0.0.1", 0))
print(" ".join(str(sock.getsockname()[1]) for sock in sockets))
PY
)"
PORT=${SUPERLINK_PORT:-${free_ports[0]}}

# Flower's default in-memory state: a state.db file made the SuperLink answer 500 on pull-messages now and
# then on a loaded machine (SQLite gives up on a lock after 5 s), and this run's state is thrown away anyway.
flower-superlink --insecure --disable-runtime-dependency-installation --port "$PORT" \
    > "$FLWR_HOME/superlink.log" 2>&1 &
superlink=$!
pids+=("$superlink")
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local-deployment"

[superlink.local-deployment]
address = "127.0.0.1:$PORT"
insecure = true
TOML

# Ready when it answers a run listing; give up (with its log) if it dies or stays silent.
deadline=$((SECONDS + READY_SECONDS))
until flwr ls local-deployment > /dev/null 2>&1; do
    if ! kill -0 "$superlink" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "the SuperLink on 127.0.0.1:$PORT did not answer within ${READY_SECONDS}s; its log:" >&2
        cat "$FLWR_HOME/superlink.log" >&2
        exit 1
    fi
    sleep 0.5
done

for i in $(seq 0 $((N - 1))); do
    node_config="partition-id=$i num-partitions=$N"
    if [ "${#data_paths[@]}" -ne 0 ]; then node_config+=" data-path=\"${data_paths[$i]}\""; fi
    flower-supernode --insecure --superlink "127.0.0.1:$PORT" --port "${free_ports[$((i + 1))]}" \
        --node-config "$node_config" > "$FLWR_HOME/supernode-$i.log" 2>&1 &
    pids+=($!)
done
show_logs() {
    echo "the SuperLink's log:" >&2
    tail -n 60 "$FLWR_HOME/superlink.log" >&2
    for i in $(seq 0 $((N - 1))); do echo "SuperNode $i:" >&2; tail -n 30 "$FLWR_HOME/supernode-$i.log" >&2; done
}
if ! submitted=$(flwr run . local-deployment --format json \
    --run-config "num-rounds=$ROUNDS num-clients=$N min-nodes=$N out-dir='$OUT' server-run='$SERVER_RUN' $EXTRA"); then
    echo "flwr run could not submit the run: $submitted" >&2
    show_logs
    exit 1
fi
run_id=$("$VENV_BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["run-id"])' <<< "$submitted")
flwr log "$run_id" local-deployment --stream || true
# Flower 1.42's `flwr run` (with or without --stream) and `flwr log` exit 0 even when the ServerApp fails
# (exit code 700 and a traceback in the log): the run's final status in `flwr ls` is what tells.
status_of_run() {
    flwr ls local-deployment --run-id "$run_id" --format json | "$VENV_BIN/python" -c '
import json, sys
run = json.load(sys.stdin)["runs"][0]
print(run["status"], run.get("status-details", ""), sep="\t")'
}
until status=$(status_of_run) && [[ $status == finished* ]]; do
    if ! kill -0 "$superlink" 2>/dev/null; then echo "the SuperLink died during run $run_id" >&2; show_logs; exit 1; fi
    sleep 2
done
if [[ $status != finished:completed* ]]; then
    show_logs
    echo "run $run_id ended ${status%%$'\t'*}: ${status#*$'\t'}" >&2
    exit 1
fi
# The run completed; the federated state says how many rounds it saved.
"$VENV_BIN/python" - "$OUT" "$ROUNDS" <<'PY'
import sys
from pathlib import Path
from nptface.server.federation.state import latest_state
state = latest_state(Path(sys.argv[1]))
done = 0 if state is None else state.round
print(f"deployment engine: {done} of {sys.argv[2]} rounds completed in {sys.argv[1]}")
sys.exit(0 if done >= int(sys.argv[2]) else 1)
PY
