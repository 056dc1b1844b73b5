"""Packet vectors for the fast path: frames in, frames expected out, as data (Katran style).

Each module holds a list of dicts ``{description, input, expected, verdict, reason}`` built with
scapy, plus the director configuration the vectors assume (``configure(forwarder)``).
"""
