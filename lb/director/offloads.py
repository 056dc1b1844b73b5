"""LRO off on the interfaces lbd serves, for as long as it serves them.

LRO merges TCP segments in the NIC with no record of the original segment boundaries, so an
aggregate cannot be cut back faithfully on the way out: the kernel turns LRO off on every
device it forwards from (dev_disable_lro() when forwarding is enabled), and lbd, which
forwards in userspace, does the same. GRO may stay on: its aggregates carry gso_size and
reach the fast path through the ring's virtio_net_hdr (PACKET_VNET_HDR), which sends them on
whole. Through pyroute2's ethtool (ETHTOOL_SFEATURES), as the lab does.
"""
from __future__ import annotations

import logging

from pyroute2.ethtool import Ethtool

log = logging.getLogger("lbd")
LRO = "rx-lro"


def disable_lro(ifnames) -> list[str]:
    """Turn LRO off where it is on; the interfaces changed, for restore_lro()."""
    changed = []
    with Ethtool() as et:
        for ifname in ifnames:
            try:
                feats = et.get_features(ifname)
                lro = feats.features.get(LRO)
                if lro is None or not lro.enable:
                    continue
                lro.enable = False
                et.set_features(ifname, feats)
            except Exception as e:          # noqa: BLE001 -- a device without the ioctl
                log.warning("cannot turn LRO off on %s (%s): aggregates from it are dropped",
                            ifname, e)
                continue
            log.info("LRO turned off on %s while lbd serves it", ifname)
            changed.append(ifname)
    return changed


def restore_lro(ifnames) -> None:
    with Ethtool() as et:
        for ifname in ifnames:
            try:
                feats = et.get_features(ifname)
                feats.features[LRO].enable = True
                et.set_features(ifname, feats)
                log.info("LRO back on on %s", ifname)
            except Exception as e:          # noqa: BLE001 -- the device may be gone
                log.warning("cannot turn LRO back on on %s: %s", ifname, e)
