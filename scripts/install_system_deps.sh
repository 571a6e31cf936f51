#!/usr/bin/env bash
# Debian packages the tests and the app need: DICOM validators, PDF tools, a browser
# for the end-to-end test, PostgreSQL for the records tests, Tesseract for the burned-in
# text check. Idempotent.
set -euo pipefail
PKGS="dicom3tools dcmtk poppler-utils chromium chromium-driver postgresql fonts-dejavu-core tesseract-ocr orthanc orthanc-dicomweb"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "Installing Debian packages:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
