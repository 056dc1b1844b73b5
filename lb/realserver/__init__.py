"""What runs on a real server: setup/teardown (host) with its undo log, the userspace IPIP
decapsulator, the ENAT reply agent, their daemon base, and the TOA reader for servers."""
