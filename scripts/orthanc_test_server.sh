#!/usr/bin/env bash
# A throwaway Orthanc PACS with its DICOMweb plugin on loopback, for the tests.
#
#   orthanc_test_server.sh start [STATE_DIR]   start (or restart on STATE_DIR's storage);
#                                              prints shell assignments on stdout:
#                                              WORKBENCH_TEST_ORTHANC_URL, _USER, _PASSWORD, _DIR,
#                                              _DIMSE (AE@HOST:PORT of its DICOM port; it knows
#                                              the calling AE title WORKBENCH for C-FIND/C-GET)
#   orthanc_test_server.sh stop STATE_DIR [--purge] [--kill]
#                                              stop it; --purge also removes the folder, --kill
#                                              stops it at once (SIGKILL, like a crash)
#
# Free HTTP and DICOM ports, storage in STATE_DIR (a new temporary folder by default),
# basic authentication with a test user, RemoteAccessAllowed false. Only the assignments
# go to stdout; everything else goes to stderr. Exit 1 when Orthanc or the plugin is missing.
set -euo pipefail
exec 3>&1 1>&2

find_plugin() {
  local candidate
  for candidate in /usr/share/orthanc/plugins/libOrthancDicomWeb.so \
    /usr/lib/orthanc/libOrthancDicomWeb.so* /usr/lib/*/orthanc/libOrthancDicomWeb.so*; do
    [ -e "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir=${1:-}
  command -v Orthanc >/dev/null || { echo "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)"; exit 1; }
  local plugin
  plugin=$(find_plugin) || { echo "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"; exit 1; }
  [ -n "$dir" ] || dir=$(mktemp -d "${TMPDIR:-/tmp}/wb-orthanc.XXXXXX")
  mkdir -p "$dir/storage"
  chmod 700 "$dir"
  if [ -f "$dir/orthanc.pid" ] && kill -0 "$(cat "$dir/orthanc.pid")" 2>/dev/null; then
    echo "Orthanc already runs on $dir"; exit 1
  fi
  local http dicom user=wb_test password
  http=$(free_port)
  dicom=$(free_port)
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
  umask 077
  cat >"$dir/orthanc.json" <<JSON
{
  "Name": "WorkbenchTestPACS",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/storage",
  "StorageCompression": false,
  "HttpPort": $http,
  "DicomPort": $dicom,
  "DicomAet": "WBTEST",
  "DicomCheckCalledAet": true,
  "DicomModalities": { "workbench": { "AET": "WORKBENCH", "Host": "127.0.0.1", "Port": 104,
                                      "AllowGet": true, "AllowFind": true } },
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": true,
  "RegisteredUsers": { "$user": "$password" },
  "HttpTimeout": 60,
  "HttpThreadsCount": 8,
  "ConcurrentJobs": 1,
  "OverwriteInstances": false,
  "SaveJobs": false,
  "Plugins": ["$plugin"],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": false, "Host": "127.0.0.1:$http" }
}
JSON
  # Debian's DCMTK leaves Nagle's algorithm on for DICOM connections unless TCP_NODELAY=1 is
  # in the environment (Orthanc's own builds turn it off when compiled); with it on, every
  # C-GET sub-operation waits about 40 ms for a delayed acknowledgement.
  TCP_NODELAY=1 setsid Orthanc "$dir/orthanc.json" >"$dir/orthanc.log" 2>&1 </dev/null 3>&- &
  echo $! >"$dir/orthanc.pid"
  local url="http://127.0.0.1:$http/dicom-web"
  for _ in $(seq 1 100); do
    if python3 - "$url" "$user" "$password" <<'PY' 2>/dev/null; then
import base64, sys, urllib.request
url, user, password = sys.argv[1:4]
token = base64.b64encode(f"{user}:{password}".encode()).decode()
request = urllib.request.Request(url + "/studies", headers={"Authorization": "Basic " + token})
urllib.request.urlopen(request, timeout=2).read()
PY
      printf 'WORKBENCH_TEST_ORTHANC_URL=%s\nWORKBENCH_TEST_ORTHANC_USER=%s\nWORKBENCH_TEST_ORTHANC_PASSWORD=%s\nWORKBENCH_TEST_ORTHANC_DIR=%s\nWORKBENCH_TEST_ORTHANC_DIMSE=%s\n' \
        "$url" "$user" "$password" "$dir" "WBTEST@127.0.0.1:$dicom" >&3
      return 0
    fi
    if ! kill -0 "$(cat "$dir/orthanc.pid")" 2>/dev/null; then
      echo "Orthanc exited during start-up:"; tail -n 20 "$dir/orthanc.log"; exit 1
    fi
    sleep 0.1
  done
  echo "Orthanc did not answer within 10 s:"; tail -n 20 "$dir/orthanc.log"
  stop "$dir"
  exit 1
}

stop() {
  local dir=$1 purge="" signal=TERM flag
  shift
  for flag in "$@"; do
    case "$flag" in --purge) purge=1 ;; --kill) signal=KILL ;; esac
  done
  if [ -f "$dir/orthanc.pid" ]; then
    local pid
    pid=$(cat "$dir/orthanc.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -s "$signal" "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$dir/orthanc.pid"
  fi
  [ -n "$purge" ] && rm -rf "$dir"
  return 0
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) [ -n "${2:-}" ] || { echo "usage: $0 stop STATE_DIR [--purge] [--kill]"; exit 2; }; shift; stop "$@" ;;
  *) echo "usage: $0 start [STATE_DIR] | stop STATE_DIR [--purge] [--kill]"; exit 2 ;;
esac
