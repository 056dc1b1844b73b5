"""The benchmark harness shared by bench/pps.py, bench/cps.py and later benchmarks.

    proc      subprocesses, namespaces, sysctl, signals, our own processes' CPU time
    frames    frame building and parsing, Internet checksum, trafgen config
    topology  the addressing plan and BenchTopology, the gen/fwd/sink namespaces
    modes     the forwarders measured: kernel, nftdnat, and lbd in nat/dr/tun/fullnat/enat
    generator bench/pktgen.c (or trafgen) in the gen namespace
    trial     one trial: quiet wait, warm-up with a sink capture, the flood window
    report    the summary over trials, the table, the JSON file
    options   the command-line options every benchmark shares
    run       a whole run: lab up, modes interleaved per trial round, teardown, report

It never imports `lb`: the daemon and lbadm run as subprocesses from the tree the options name
(--lb-root), so that the harness can measure another tree than the one it lives in.
"""
