#!/usr/bin/env bash
# A throwaway local Ray cluster for the tests: a head node with two CPU worker slots.
#
#   scripts/ray_test_cluster.sh start   prints two lines on stdout: the cluster's address
#                                       (HOST:PORT), then its temp folder
#   scripts/ray_test_cluster.sh stop TEMP_DIR
#                                       stops that cluster (its processes only) and
#                                       removes the folder
#
# Loopback only. `--node-ip-address=127.0.0.1` alone is not enough: Ray replaces a
# loopback address by the machine's own (ray/_private/services.py,
# resolve_ip_for_localhost -> get_node_ip_address, Ray 2.60), and its GCS and raylet
# then listen on every interface (`ss -ltnp` shows *:PORT, the address printed is the
# machine's). Ray keeps to 127.0.0.1 only where it believes multi-node clusters are
# unsupported, which RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 says on Linux too
# (ray_constants.ENABLE_RAY_CLUSTER): then the GCS, the raylet and the client server
# listen on 127.0.0.1 and the address printed is 127.0.0.1:PORT. A client must run with
# the same setting (tests/inference/test_ray_executor.py sets it before importing ray),
# or it too replaces 127.0.0.1 by the machine's address and finds no GCS there. The
# price is that no other node can join (`ray start --address=...` refuses). For the
# node-loss test, WORKBENCH_TEST_RAY_MULTINODE=1 starts a head that accepts worker
# nodes: Ray then listens on every interface, as above (ray-project/ray#26293, #59110).
# A head on another loopback address (127.0.0.2) is kept there but still listens on
# every interface.
#
# Nodes that die are declared dead after about 3 s (health checks every second, three
# misses) instead of Ray's default of half a minute, so that fault tests stay short.
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
    if [ "${WORKBENCH_TEST_RAY_MULTINODE:-0}" != 1 ]; then
      export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    fi
    export RAY_health_check_period_ms=1000 RAY_health_check_timeout_ms=1000 \
      RAY_health_check_failure_threshold=3 RAY_health_check_initial_delay_ms=1000
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
