"""netfw: a per-VM firewall layer for KVM hypervisors, one network namespace per VM."""

__version__ = "0.1.0"
