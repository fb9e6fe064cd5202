"""OpenNebula: its VM documents read safely (one.py, one_fields.py), the network-driver actions pre, post, clean,
update_sg and update_nic (driver.py, driver_call.py), the legacy security groups removed (legacy.py), netfw hooked
into a front-end's drivers (install.py, install_layout.py, install_tree.py), and libvirt's qemu hook for OpenNebula's
domains: their NICs behind the firewall before QEMU starts (hook.py, domain.py, hook_install.py).

May import: netfw.api and every layer below it; not netfw.observe.
"""
