#!/bin/sh
# Installs what lvs-py needs on a fresh Debian-like machine (as root) and builds the fast path.
# Safe to run again: it only asks apt for tools that are missing.
set -eu
cd "$(dirname "$0")"
need=""
for tool in nft:nftables ip:iproute2 curl:curl ethtool:ethtool gcc:gcc taskset:util-linux; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need="$need ${tool#*:}"
done
if [ -n "$need" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need python3-dev >/dev/null
fi
# Editable install: the Cython extension (lb/_forward*.so) is built next to the sources, so
# the tree you run from is the code that runs.
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
