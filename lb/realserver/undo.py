"""The record of what ``lb realserver`` changed in a network namespace, so it can be undone.

Every change is recorded, with the old value, in ``/run/lb-rs/netns-<inode>.json`` (the
inode of /proc/self/ns/net) before the next one is made; teardown undoes exactly those, in
reverse order. A change two modes need (e.g. ``arp_ignore`` for DR and TUN) is recorded once
with both as users, and undone when the last of them is torn down. The namespace's cookie
(SO_NETNS_COOKIE, never reused) tells a state file of a namespace that is gone from one of
the current namespace with the same inode. One ``lb realserver`` at a time: :func:`locked`.
Side files ``netns-<inode>-<daemon>.json|log`` hold a background daemon's counters and stderr.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

STATE_DIR = Path("/run/lb-rs")
SO_NETNS_COOKIE = 71
# The fields that say which resource an undo-log entry is about (the rest is undo data).
ID_FIELDS = {"sysctl": ("key",), "addr": ("ifname", "address"), "route": ("table", "gateway"),
             "rule": ("src", "table"), "link": ("ifname",), "link_up": ("ifname",), "xdp": ("ifname",),
             "process": ("name",)}
# How each kind of change is described to the user ("process" for anything else).
DESCRIPTIONS = {"sysctl": "sysctl {key} {old} -> {new}",
                "addr": "address {address}/32 on {ifname}",
                "route": "route default via {gateway} table {table}",
                "rule": "rule from {src} lookup {table} (priority {priority})",
                "link": "link {ifname} ({link_kind})",
                "link_up": "link {ifname} set up",
                "xdp": "XDP decapsulator (program {prog_id}, {xdp_mode}) on {ifname}",
                "process": "process {name} pid {pid}"}


# -- where we are ---------------------------------------------------------------------------------

def netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def netns_cookie():
    with socket.socket() as s:
        try:
            return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), sys.byteorder)
        except OSError:
            return None


def state_path(inode: int | None = None) -> Path:
    return STATE_DIR / f"netns-{inode if inode is not None else netns_inode()}.json"


def side_file(inode: int, what: str) -> Path:
    return STATE_DIR / f"netns-{inode}-{what}"


def forget_netns(inode: int) -> None:
    """Remove the files of a namespace that is being deleted (its changes go with it)."""
    for path in (state_path(inode), *(side_file(inode, f"{d}.{ext}") for d in ("decap", "enat_agent")
                                      for ext in ("json", "log"))):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked():
    """One lb realserver at a time (flock on the state directory)."""
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(STATE_DIR, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- the undo log ---------------------------------------------------------------------------------

def _ident(item: dict) -> tuple:
    return (item["kind"], *(item[f] for f in ID_FIELDS[item["kind"]]))


def describe(item: dict) -> str:
    return DESCRIPTIONS.get(item["kind"], DESCRIPTIONS["process"]).format(**item)


class UndoLog:
    """The state file: modes set up here and the changes made for them, in order."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    @classmethod
    def load(cls, inode: int) -> "UndoLog":
        path = state_path(inode)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            data = {"netns_inode": inode, "netns_cookie": netns_cookie(), "modes": {}, "changes": []}
        return cls(path, data)

    @property
    def stale(self) -> bool:
        cookie = self.data.get("netns_cookie")
        return cookie is not None and cookie != netns_cookie()

    def save(self) -> None:
        if not self.data["modes"] and not self.data["changes"]:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)

    def find(self, ident: tuple):
        return next((c for c in self.data["changes"] if _ident(c) == ident), None)

    def acquire(self, mode: str, item: dict, apply) -> str:
        """Make a change for `mode` unless it is already recorded (then share it)."""
        found = self.find(_ident(item))
        if found is not None:
            if mode not in found["users"]:
                found["users"].append(mode)
                self.save()
            return f"shared: {describe(found)}"
        undo = apply()
        if undo is None:
            return ""
        self.data["changes"].append({**item, **undo, "users": [mode]})
        self.save()
        return f"changed: {describe(self.data['changes'][-1])}"

    def release(self, mode: str | None, host) -> tuple[list, list]:
        """Undo (`host.undo(item)`), newest first, the changes no mode uses any more.
        Returns (messages, errors)."""
        out, errors = [], []
        for item in reversed(list(self.data["changes"])):
            if mode in item["users"]:
                item["users"].remove(mode)
            if item["users"]:
                continue
            try:
                out.append(host.undo(item))
                if item.get("last_words"):
                    out.append(f"  {'decapsulator' if item['name'] == 'decap' else item['name']} said: "
                               f"{item['last_words']}")
                self.data["changes"].remove(item)
            except Exception as e:  # keep it recorded: a later teardown retries it
                errors.append(f"could not undo {describe(item)}: {e}")
            self.save()
        return out, errors
