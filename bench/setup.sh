#!/bin/sh
# What the benchmarks need beyond the virtualenv: h2load, from Debian's nghttp2-client.
set -eu
if command -v h2load >/dev/null 2>&1; then
    h2load --version
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "h2load not found: install nghttp2 (its h2load tool) with this system's packages" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends nghttp2-client
h2load --version
