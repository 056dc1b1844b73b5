"""lvs-py: a userspace Layer-4 load balancer in the manner of Linux Virtual Server."""
__version__ = "0.1.0"
