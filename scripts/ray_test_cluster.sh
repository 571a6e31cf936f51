#!/usr/bin/env bash
# A throwaway local Ray cluster for the tests: a head node with two CPU worker slots.
#
#   scripts/ray_test_cluster.sh start   prints two lines on stdout: the cluster's address
#                                       (HOST:PORT), then its temp folder
#   scripts/ray_test_cluster.sh stop TEMP_DIR
#                                       stops that cluster (its processes only) and
#                                       removes the folder
#
# The head is asked to listen on 127.0.0.1; Ray itself replaces a loopback address by
# the machine's own address, so the cluster is reachable wherever this machine is.
# Only the address and folder go to stdout; everything Ray says goes to stderr.
set -euo pipefail
exec 3>&1 1>&2
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
RAY="$VENV/bin/ray"
CPUS=${WORKBENCH_TEST_RAY_CPUS:-2}

case "${1:-}" in
  start)
    [ -x "$RAY" ] || { echo "ray is not installed in $VENV (pip install '.[ray]')"; exit 1; }
    # Short path: Ray's Unix sockets live under it (sun_path is limited to 107 bytes).
    temp=$(mktemp -d /tmp/wbray.XXXXXX)
    # A throwaway test cluster: no token authentication, so that test processes connect
    # without a token file (production clusters keep Ray's default, see docs/deployment.md).
    export RAY_AUTH_MODE=disabled
    # The head runs in its own process group (setsid) with --block, so that `stop` can
    # end exactly this cluster's processes by their group id.
    setsid "$RAY" start --head --block --node-ip-address=127.0.0.1 --port=0 \
      --num-cpus="$CPUS" --num-gpus=0 --temp-dir="$temp" --include-dashboard=false \
      --disable-usage-stats >"$temp/ray-start.log" 2>&1 </dev/null 3>&- &
    echo $! >"$temp/ray-start.pid"
    for _ in $(seq 1 120); do
      if [ -s "$temp/ray_current_cluster" ]; then
        echo "$(cat "$temp/ray_current_cluster")" >&3
        echo "$temp" >&3
        exit 0
      fi
      if ! kill -0 "$(cat "$temp/ray-start.pid")" 2>/dev/null; then break; fi
      sleep 0.5
    done
    echo "Ray head did not start; its log:"
    cat "$temp/ray-start.log" || true
    exit 1
    ;;
  stop)
    temp=${2:?usage: ray_test_cluster.sh stop TEMP_DIR}
    [ -f "$temp/ray-start.pid" ] || { echo "no Ray test cluster in $temp"; exit 0; }
    pgid=$(cat "$temp/ray-start.pid")
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 -- "-$pgid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    rm -rf "$temp"
    ;;
  *)
    echo "usage: ray_test_cluster.sh start | stop TEMP_DIR"
    exit 2
    ;;
esac
