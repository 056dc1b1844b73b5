"""Namespace and link helpers of the lab (:mod:`lb.lab.topology`): setns per thread, pyroute2 in a
namespace, sysctls, offloads, signal deferral during teardown, and the PIDs living in a namespace.

:func:`disable_offloads` turns checksum, segmentation and GRO offloads off on a lab's
interfaces when it is built with ``Lab(offloads="off")`` (for comparisons; by default they
stay as veths come, and lbd takes 64 KB GSO frames and CHECKSUM_PARTIAL checksums).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.ethtool import Ethtool

from lb.inet import checksum

NETNS_DIR = Path("/var/run/netns")

# Features that make AF_PACKET see frames the wire never carries (GSO/GRO super-frames)
# or checksums not yet filled in (tx checksum offload leaves CHECKSUM_PARTIAL on veth).
OFFLOAD_RE = re.compile(r"^(tx-checksum-.*|tx-.*segmentation|tx-gso-.*|rx-gro.*|rx-lro|rx-udp-gro-forwarding)$")
MUST_BE_OFF = ("tx-checksum-ip-generic", "tx-tcp-segmentation", "tx-generic-segmentation", "rx-gro")


class LabError(RuntimeError):
    pass

@contextlib.contextmanager
def in_netns(name: str):
    """Run the block with the calling *thread* in namespace `name` (setns is per thread).

    Sockets made inside stay in that namespace; /proc/sys/net opened inside is its sysctls.
    """
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        netns.setns(name, flags=0)
        yield
    finally:
        netns.setns(saved)
        os.close(saved)


@contextlib.contextmanager
def iproute(name: str):
    """IPRoute bound to namespace `name`, made by setns in this thread.

    IPRoute(netns=...) would fork a helper for every socket; a forked copy of a program
    that handles SIGTERM/SIGINT could then run that program's cleanup code.
    """
    with in_netns(name), IPRoute() as ipr:
        yield ipr


def write_sysctls(values: dict) -> None:
    """Write sysctls ('net.ipv4.ip_forward': 1) in the current namespace; missing keys skipped."""
    for key, value in values.items():
        path = Path("/proc/sys") / key.replace(".", "/")
        if path.exists():
            path.write_text(f"{value}\n")


def disable_offloads(ifnames) -> dict:
    """Turn off checksum, segmentation and GRO offloads on `ifnames` (current namespace).

    Uses pyroute2.ethtool (ETHTOOL_SFEATURES ioctl); falls back to the ethtool binary.
    Returns {ifname: [features still on that must be off]} (empty lists on success).
    """
    left = {}
    with Ethtool() as et:
        for ifname in ifnames:
            try:
                feats = et.get_features(ifname)
                for name, f in feats.features.items():
                    if f.available and f.enable and OFFLOAD_RE.match(name):
                        f.enable = False
                et.set_features(ifname, feats)
            except Exception:
                _ethtool_binary(ifname)
            left[ifname] = offloads_on(et, ifname)
    return left


def offloads_on(et: Ethtool, ifname: str) -> list:
    """The MUST_BE_OFF features that are on (an empty list is right)."""
    now = et.get_features(ifname).features
    return [n for n in MUST_BE_OFF if n in now and now[n].enable]


def _ethtool_binary(ifname: str) -> None:
    if not shutil.which("ethtool"):
        raise LabError(f"cannot turn offloads off on {ifname}: pyroute2.ethtool failed, no ethtool binary")
    subprocess.run(["ethtool", "-K", ifname, "tx", "off", "tso", "off", "gso", "off", "gro", "off"],
                   check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM until the block ends, then raise KeyboardInterrupt.

    Teardown must finish even when a second signal comes (`timeout` sends SIGTERM to the
    child and then to its whole process group; Ctrl-C twice). Python runs signal handlers
    only in the main thread, so other threads need no protection.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    saved = {sig: signal.signal(sig, lambda signum, _: caught.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]} during teardown")


def pids_in_netns(names) -> set:
    """PIDs of processes whose network namespace is one of the named namespaces."""
    inodes, found = set(), set()
    for name in names:
        with contextlib.suppress(OSError):
            st = os.stat(NETNS_DIR / name)
            inodes.add((st.st_dev, st.st_ino))
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inodes:
            found.add(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


icmp_checksum = checksum   # the lab's ping builds its echo request with it
