"""Rendering: a NIC's spec becomes the exact lines iptables, ip6tables and ebtables restore and print (render.py,
with the chain layout in chains.py and the anti-spoofing, ND and DHCP guards in guards.py), the ipset input, and
the one composer of restore files and batch scripts that refuses a line break inside a line (script.py, tables.py).
Pure.

May import: netfw.model and the bottom (netfw.errors, netfw.runner, netfw.transaction).
"""
