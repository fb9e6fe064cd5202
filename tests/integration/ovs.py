"""A private Open vSwitch for the lab: ovsdb-server and ovs-vswitchd (userspace `netdev` datapath) in a temp dir.

This machine's kernel has no openvswitch module, but the userspace datapath runs inside the unprivileged sandbox
(KERNEL.md, "Open vSwitch without the kernel module"). While it runs, OVS_RUNDIR, OVS_LOGDIR, OVS_DBDIR and
OVS_SYSCONFDIR point at its directory in this process's environment, so every `ovs-vsctl` / `ovs-ofctl` /
`ovs-appctl` started later (netfw's own included) talks to this instance and to no other.

The daemons run in the foreground as children of the test process (not `--detach`): a detached daemon is re-parented
out of the sandbox's reach and outlives it; a child is told to stop when the test process dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
ENV_KEYS = ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR")
TIMEOUT = 10  # seconds: any ovs-vsctl that waits for ovs-vswitchd gives up (SIGALRM, exit 142) after this
PROBE_BRIDGE = "ovslabprobe"


_active: Ovs | None = None  # the instance this process's environment points at


class OvsUnavailable(RuntimeError):
    """Open vSwitch cannot run here; the message says why."""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run an OVS tool of the lab; a failure raises with the command, exit code and stderr."""
    # Without OVS_RUNDIR the tools would reach the host's own Open vSwitch (/run/openvswitch is not private to the
    # sandbox): the lab talks only to the instance it started.
    if _active is None or os.environ.get("OVS_RUNDIR") != str(_active.dir):
        raise RuntimeError(f"{argv[0]}: no lab Open vSwitch is running here (use the `ovs` fixture)")
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode:
        raise RuntimeError(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")
    return res


def vsctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """ovs-vsctl with a timeout, so that a dead ovs-vswitchd fails the call instead of hanging it."""
    return run("ovs-vsctl", f"--timeout={TIMEOUT}", *args, check=check)


def ofctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("ovs-ofctl", *args, check=check)


def settle() -> None:
    """Flush the datapath's cached flows, so that the next packet meets the current flow table and port settings.
    ovs-ofctl (and ovs-vswitchd after ovs-vsctl) revalidate the cache asynchronously: a ping right after
    `add-flow ... actions=drop` went through once in ten runs."""
    run("ovs-appctl", "revalidator/purge")


def add_flow(bridge: str, flow: str) -> None:
    """ovs-ofctl add-flow, in force for the next packet."""
    ofctl("add-flow", bridge, flow)
    settle()


def del_flows(bridge: str, match: str) -> None:
    """ovs-ofctl del-flows, in force for the next packet."""
    ofctl("del-flows", bridge, match)
    settle()


def unavailable() -> str | None:
    """Why OVS cannot even be tried here (missing binaries or schema), or None."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"Open vSwitch is not installed: {', '.join(missing)} not on PATH (Debian: openvswitch-switch)"
    if not SCHEMA.is_file():
        return f"Open vSwitch schema {SCHEMA} is missing (Debian: openvswitch-common)"
    return None


def running() -> bool:
    """True while a lab OVS is exported in this process's environment (its db socket exists)."""
    return (_active is not None and os.environ.get("OVS_RUNDIR") == str(_active.dir)
            and (_active.dir / "db.sock").is_socket())


def check() -> None:
    """Raise unless the lab OVS runs, with its daemons' logs when one of them died. Safe to repeat."""
    if not running():
        raise RuntimeError("no lab Open vSwitch is running: use the `ovs` fixture")
    _active.check()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, whatever killed it."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class Ovs:
    """One private ovsdb-server + ovs-vswitchd; start() exports its environment, stop() restores it."""

    def __init__(self, workdir: str | Path | None = None):
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="netfw-ovs-"))
        self.env = {key: str(self.dir) for key in ENV_KEYS}
        self.procs: dict[str, subprocess.Popen] = {}
        self._saved_env: dict[str, str | None] = {}

    # --- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> Ovs:
        """Start both daemons and prove the netdev datapath can make a bridge; OvsUnavailable says why not."""
        why = unavailable()
        if why:
            raise OvsUnavailable(why)
        try:
            self._export()
            run("ovsdb-tool", "create", str(self.dir / "conf.db"), str(SCHEMA))
            self._spawn("ovsdb-server", str(self.dir / "conf.db"), f"--remote=punix:{self.dir / 'db.sock'}",
                        "--pidfile", "--log-file")
            self._await(lambda: (self.dir / "db.sock").is_socket()
                        and run("ovs-vsctl", "--no-wait", "init", check=False).returncode == 0, "ovsdb-server")
            self._spawn("ovs-vswitchd", f"unix:{self.dir / 'db.sock'}", "--pidfile", "--log-file",
                        "--disable-system")
            # Without --no-wait, ovs-vsctl returns once ovs-vswitchd has applied the database: it is up.
            self._await(lambda: vsctl("init", check=False).returncode == 0, "ovs-vswitchd")
            self._probe_datapath()
        except Exception as exc:
            detail = f"{exc}\n{self.logs()}"
            self.stop()
            if isinstance(exc, OvsUnavailable):
                raise OvsUnavailable(detail) from None
            raise OvsUnavailable(f"starting Open vSwitch failed: {detail}") from None
        return self

    def stop(self) -> None:
        """Stop the daemons (datapath and its taps removed), restore the environment. Safe to repeat."""
        if "ovs-vswitchd" in self.procs:
            run("ovs-appctl", "-t", "ovs-vswitchd", "exit", "--cleanup", check=False)
        if "ovsdb-server" in self.procs:
            run("ovs-appctl", "-t", "ovsdb-server", "exit", check=False)
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            del self.procs[name]
        self._restore()
        shutil.rmtree(self.dir, ignore_errors=True)

    def check(self) -> None:
        """Raise (with the daemons' logs) if one of them has died since start."""
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        if dead:
            raise RuntimeError(f"Open vSwitch daemon(s) {', '.join(dead)} died:\n{self.logs()}")

    def logs(self, lines: int = 8) -> str:
        """The daemons' last warnings and errors (the INFO lines say nothing about why a start failed)."""
        out = []
        for path in sorted(self.dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            worst = [line for line in text if any(f"|{lvl}|" in line for lvl in ("WARN", "ERR", "EMER"))]
            if worst:
                out.append(f"--- {path.name}\n" + "\n".join(worst[-lines:]))
        for path in sorted(self.dir.glob("*.stderr")):
            text = [line for line in path.read_text(errors="replace").splitlines() if "|INFO|" not in line]
            if text:
                out.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    # --- internals ----------------------------------------------------------------------------------------------

    def _export(self) -> None:
        global _active
        if _active is not None:
            raise OvsUnavailable(f"another lab Open vSwitch runs in this process ({_active.dir})")
        self._saved_env = {key: os.environ.get(key) for key in ENV_KEYS}
        os.environ.update(self.env)
        _active = self

    def _restore(self) -> None:
        global _active
        if _active is self:
            _active = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}

    def _spawn(self, name: str, *args: str) -> None:
        with open(self.dir / f"{name}.stderr", "w") as err:
            self.procs[name] = subprocess.Popen([name, *args], stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                                cwd=self.dir, preexec_fn=_die_with_parent)

    def _await(self, ready, name: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not ready():
            if self.procs[name].poll() is not None:
                raise OvsUnavailable(f"{name} exited with {self.procs[name].returncode}")
            if time.monotonic() > deadline:
                raise OvsUnavailable(f"{name} not ready after {TIMEOUT} s")
            time.sleep(0.02)

    def _probe_datapath(self) -> None:
        """A netdev bridge needs /dev/net/tun for its taps (root only here): prove it works once."""
        res = vsctl("add-br", PROBE_BRIDGE, "--", "set", "Bridge", PROBE_BRIDGE, "datapath_type=netdev",
                    check=False)
        error = vsctl("--if-exists", "get", "Interface", PROBE_BRIDGE, "error", check=False).stdout.strip()
        vsctl("--if-exists", "del-br", PROBE_BRIDGE, check=False)
        if res.returncode or res.stderr.strip() or error not in ("", "[]"):
            raise OvsUnavailable(f"the userspace datapath cannot create a bridge: {res.stderr.strip() or error}")


@pytest.fixture(scope="session")
def ovs():
    """A running private Open vSwitch for the whole session (about 0.3 s to start), or a skip that says why."""
    why = unavailable()
    if why:
        pytest.skip(why)
    instance = Ovs()
    try:
        instance.start()
    except OvsUnavailable as exc:
        pytest.skip(f"Open vSwitch cannot start in this sandbox: {exc}")
    yield instance
    instance.stop()


# --- state, for rollback tests ------------------------------------------------------------------------------------

TABLES = ("Bridge", "Port", "Interface", "QoS", "Queue")
NAMED = {"Bridge", "Port", "Interface"}  # rows referenced by name in a snapshot; QoS and Queue rows by content


def _ephemeral() -> dict[str, set[str]]:
    """Columns the schema marks ephemeral: status, statistics, link state, ifindex, mtu, mac_in_use, ..."""
    schema = json.loads(SCHEMA.read_text()) if SCHEMA.is_file() else {"tables": {}}
    return {table: {col for col, spec in schema["tables"].get(table, {}).get("columns", {}).items()
                    if spec.get("ephemeral")} for table in TABLES}


EPHEMERAL = _ephemeral()


def dump() -> dict[str, list[dict]]:
    """Every row of the tables a VN bridge is made of, as {table: [{column: OVSDB JSON value}]} (one call)."""
    argv = ["--format=json"]
    for table in TABLES:
        argv += ["--", "list", table]
    # one document per command, split at "\n" only: a value may hold U+2028 and the like, which ovs-vsctl prints as
    # they are and str.splitlines() would split at (issue 19)
    lines = [line for line in vsctl(*argv).stdout.split("\n") if line]
    return {table: [dict(zip(out["headings"], row)) for row in out["data"]]
            for table, out in zip(TABLES, map(json.loads, lines))}


def _resolver(tables: dict[str, list[dict]]):
    index = {row["_uuid"][1]: (table, row) for table, rows in tables.items() for row in rows}

    def clean(table: str, row: dict) -> dict:
        drop = EPHEMERAL[table] | {"_uuid", "_version"}
        return {col: resolve(val) for col, val in row.items() if col not in drop}

    def atom(value):
        if isinstance(value, list) and value[0] == "uuid":
            table, row = index.get(value[1], (None, None))
            if table is None:
                return "<dangling>"
            return row["name"] if table in NAMED else clean(table, row)
        return value

    def resolve(value):
        """An OVSDB JSON value with references replaced by names (or rows); sets and maps in a stable order."""
        if isinstance(value, list) and value[0] == "set":
            return ["set", sorted((atom(v) for v in value[1]), key=json.dumps)]
        if isinstance(value, list) and value[0] == "map":
            return ["map", sorted(([atom(k), atom(v)] for k, v in value[1]), key=json.dumps)]
        return atom(value)

    return clean


def members(value) -> list:
    """The elements of an OVSDB JSON set (a set of one element is encoded as the bare element)."""
    return value[1] if isinstance(value, list) and value and value[0] == "set" else [value]


def flows(bridge: str) -> list[str]:
    """`ovs-ofctl dump-flows` without counters (durations, packets, bytes, ages), sorted."""
    out = ofctl("--no-stats", "dump-flows", bridge).stdout
    return sorted(line.strip() for line in out.splitlines() if line.strip() and not line.startswith("NXST_FLOW"))


def snapshot() -> dict:
    """OVS state a rollback must restore: per bridge its record, each port's Port and Interface records (without
    uuids and ephemeral columns; QoS/Queue rows by content), ofport numbers, flows without counters; and every QoS
    and Queue row (root tables: they outlive the ports that name them)."""
    tables = dump()
    clean = _resolver(tables)
    by_name = {t: {row["name"]: row for row in tables[t]} for t in NAMED}
    state: dict = {}
    for name, bridge in sorted(by_name["Bridge"].items()):
        ports = {}
        for port_name in members(clean("Bridge", bridge)["ports"]):
            port = clean("Port", by_name["Port"][port_name])
            port["interfaces"] = {iface: clean("Interface", by_name["Interface"][iface])
                                  for iface in members(port["interfaces"])}
            ports[port_name] = port
        state[name] = {"bridge": clean("Bridge", bridge), "ports": ports, "flows": flows(name),
                       "ofports": {i: rec["ofport"] for p in ports.values() for i, rec in p["interfaces"].items()}}
    state["<qos>"] = sorted((clean("QoS", row) for row in tables["QoS"]), key=json.dumps)
    state["<queue>"] = sorted((clean("Queue", row) for row in tables["Queue"]), key=json.dumps)
    return state


def reset() -> None:
    """Delete every bridge (their ports, flows and datapath taps go with them) and every QoS and Queue row."""
    for bridge in vsctl("list-br").stdout.split():
        vsctl("--if-exists", "del-br", bridge)
    vsctl("--", "--all", "destroy", "QoS", "--", "--all", "destroy", "Queue")
