#!/usr/bin/env bash
# Make sure the machine has what DynamoDB Local needs: Java 17 and npm.
# Installs them with apt-get when missing and we are root; otherwise says what to install.
set -euo pipefail
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
  echo "missing: ${missing[*]} (needed for DynamoDB Local); install them and rerun" >&2
  exit 1
fi
