#!/bin/sh
# Installs what lvs-py needs on a fresh Debian-like machine (as root) and builds the fast path.
# Safe to run again: it only asks apt for what is missing.
set -eu
cd "$(dirname "$0")"
need=""
# keepalived: its VRRP moves the VIPs in the lab's two-director test (tests/integration/test_vrrp.py).
# haproxy, nginx, wrk, iperf3: the benchmark suite's references and load (bench/suite.py);
# perf (linux-perf) to profile what a benchmark finds.
for tool in nft:nftables ip:iproute2 curl:curl ethtool:ethtool gcc:gcc taskset:util-linux keepalived:keepalived \
        haproxy:haproxy nginx:nginx wrk:wrk iperf3:iperf3 perf:linux-perf; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need="$need ${tool#*:}"
done
# The Cython extension needs Python's headers.
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || need="$need python3-dev"
if [ -n "$need" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
# A distribution's own Python refuses pip installs (PEP 668); this project is installed for root
# on a test machine, so say we mean it there.
if python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED")))'; then
    export PIP_BREAK_SYSTEM_PACKAGES=1
fi
# Editable install: the Cython extensions (lb/_forward, lb/_decap, lb/realserver/_enat_reply) are built next to
# the sources, so the tree you run from is the code that runs.
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
