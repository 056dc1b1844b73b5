"""The director: lbd (daemon), lbadm (cli), the configuration and its model, the reconcile step
that takes the fast path from what is applied to what is configured, listings, netlink, nftables."""
