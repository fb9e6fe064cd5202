"""What netfw reads from and knows of the kernel and Open vSwitch: probes of links, namespaces and rules
(probe.py), the iptables backend (backend.py), OVSDB rows (ovs.py), the tap's port on its VN bridge, Linux or Open
vSwitch (port.py, connection.py), and traffic-control limits (tc.py). Readers fail closed: a failed read is an
error, never "absent".

May import: netfw.rules, netfw.model and the bottom.
"""
