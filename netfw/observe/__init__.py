"""Users of the API that look and collect: a host's and a VM's health (health.py, status.py; netfw's kernel objects,
found by their alias: owned.py), counters read back from the rules (counters.py), Prometheus metrics (metrics.py), gc
of what is stale or orphaned (gc.py), and the dropped-packet log (nflog.py, nflog_wire.py, logcmd.py).

May import: netfw.api and every layer below it; not netfw.opennebula.
"""
