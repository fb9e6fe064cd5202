"""Open vSwitch, asked and told through `ovs-vsctl`: which port a link is, on which bridge, with which records.

Whether a tap is on Open vSwitch is a question for OVSDB, never for `ip link`: on the userspace datapath a port has
no kernel master, on the kernel datapath its master is `ovs-system` whatever the bridge. One `ovs-vsctl` call reads
the port's Port and Interface records and every bridge's ports (`--if-exists`: a missing port reads as no rows with
exit 0, so any failure of the call is a failure to see, never "absent").

What netfw carries from the tap's port to the link that replaces it, and back at detach (tests/integration/
OVS_FACTS.md has the measurements): the Port columns OpenNebula's ovswitch driver and libvirt set (VLAN tag, trunks,
mode, QinQ cvlans, other_config, external_ids, qos) and the Interface columns (mtu_request, ingress policing,
external_ids, other_config, ofport_request), and the OpenFlow port number, so that flows keyed by in_port keep
applying. The values are OVSDB's JSON (RFC 7047) as read, validated as hostile input when a record or journal is
loaded, and written back in ovs-vsctl's own syntax.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from netfw.model import names
from netfw import runner
from netfw.errors import InputError

#: Every ovs-vsctl runs with a timeout (libvirt uses 5 s too): a hung ovsdb-server must not hang netfw. A timeout
#: kills it with SIGALRM, which is a failure (the transaction may have committed: the step's undo reads again).
VSCTL = ("ovs-vsctl", "--timeout=5")

PORT_COLUMNS = ("tag", "trunks", "vlan_mode", "cvlans", "other_config", "external_ids", "qos")
IFACE_COLUMNS = ("mtu_request", "ingress_policing_rate", "ingress_policing_burst", "ingress_policing_kpkts_rate",
                 "ingress_policing_kpkts_burst", "external_ids", "other_config", "ofport_request")
#: Read too, not carried: the port number OVS gave, the interface type (a tap is ""), an error OVS reports.
_IFACE_READ = (*IFACE_COLUMNS, "ofport", "type", "error")

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_TEXT = 4096  # one string in a record (external_ids values are short ids, MACs, names)
_MAX_ITEMS = 4096  # elements of a set or map (trunks: at most 4096 VLANs)
#: The most bytes the add-port call that writes a port's records back may take (its argv, NULs included): the
#: kernel's limit for a whole argv is 2 MiB with an 8 MiB stack (ARG_MAX, the environment included), for one argument
#: 128 KiB (MAX_ARG_STRLEN; add_argv writes a map key by key, so no argument comes near it). Records that would not
#: fit are refused when read, before anything changes: at the cut-over neither the add-port nor its rollback could
#: write them (E2BIG), and the tap would be left off its bridge.
MAX_ARGV = 1024 * 1024


def _atom(value: object, where: str) -> None:
    """A scalar OVSDB value: int, bool, a string without NUL, or a uuid reference."""
    if isinstance(value, bool) or (isinstance(value, int) and -(1 << 63) <= value < (1 << 63)):
        return
    if isinstance(value, str):
        if len(value) > _MAX_TEXT or "\0" in value:
            raise InputError(f"{where}: a string longer than {_MAX_TEXT} characters or with a NUL")
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate (from a record's "\ud800"): OVSDB holds UTF-8 only
            raise InputError(f"{where}: a string that is not Unicode text") from None
        return
    if isinstance(value, list) and len(value) == 2 and value[0] == "uuid" and isinstance(value[1], str) \
            and _UUID_RE.fullmatch(value[1]):
        return
    raise InputError(f"{where}: {value!r} is not an OVSDB atom")


def check_value(value: object, where: str) -> None:
    """InputError unless value is OVSDB JSON netfw can write back: an atom, ["set", [atoms]], ["map", [[a, a]]]."""
    if isinstance(value, list) and len(value) == 2 and value[0] in ("set", "map"):
        items = value[1]
        if not isinstance(items, list) or len(items) > _MAX_ITEMS:
            raise InputError(f"{where}: {value[0]} of more than {_MAX_ITEMS} items")
        for item in items:
            if value[0] == "map":
                if not (isinstance(item, list) and len(item) == 2):
                    raise InputError(f"{where}: a map entry {item!r} is not [key, value]")
                _atom(item[0], where)
                _atom(item[1], where)
            else:
                _atom(item, where)
        return
    _atom(value, where)


def render(value: object) -> str:
    """An OVSDB JSON value in ovs-vsctl's syntax: strings always JSON-quoted, numbers bare, [a, b], {k=v}. Pure."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    kind, items = value  # type: ignore[misc]
    if kind == "uuid":
        return items
    if kind == "set":
        return "[" + ", ".join(render(v) for v in items) + "]"
    return "{" + ", ".join(f"{render(k)}={render(v)}" for k, v in items) + "}"


def assignments(column: str, value: object) -> list[str]:
    """ovs-vsctl `set` arguments that give a new record's column value: `col=VALUE`, or for a map one `col:KEY=VALUE`
    per entry (a new record's map is empty), so that no argument nears the kernel's 128 KiB limit whatever the map
    holds (MAX_ARGV). Pure."""
    if isinstance(value, list) and value[0] == "map":
        return [f"{column}:{render(k)}={render(v)}" for k, v in value[1]]
    return [f"{column}={render(value)}"]


def _is_default(value: object) -> bool:
    """An empty set or map, or 0: what a new port has anyway (nothing to write)."""
    return value == ["set", []] or value == ["map", []] or (type(value) is int and value == 0)


@dataclass(frozen=True)
class OvsPort:
    """A port of an OVS bridge as netfw carries it: its bridge, the Port and Interface columns, its OpenFlow port."""

    bridge: str
    port: tuple[tuple[str, object], ...]  # (column, OVSDB JSON value) of PORT_COLUMNS
    iface: tuple[tuple[str, object], ...]  # (column, OVSDB JSON value) of IFACE_COLUMNS
    ofport: int | None  # None: not known (a detach without record): OVS picks one

    def __post_init__(self) -> None:
        names.check_ifname(self.bridge, "Open vSwitch bridge")
        if self.ofport is not None and (type(self.ofport) is not int or not 1 <= self.ofport <= 65279):  # OFPP_MAX
            raise InputError(f"OpenFlow port {self.ofport!r} is not 1..65279")
        for table, allowed, columns in (("Port", PORT_COLUMNS, self.port), ("Interface", IFACE_COLUMNS, self.iface)):
            if not isinstance(columns, tuple):
                raise InputError(f"{table} columns are not a list")
            for item in columns:
                if not (isinstance(item, tuple) and len(item) == 2 and item[0] in allowed):
                    raise InputError(f"{table} column {item!r} is not one netfw carries")
                check_value(item[1], f"{table} {item[0]}")
        size = sum(len(arg.encode()) + 1 for arg in self.add_argv("x" * names.IFNAME_MAX))
        if size > MAX_ARGV:
            raise InputError(f"Open vSwitch records of {size} bytes: more than the {MAX_ARGV} netfw can write back "
                             "in one ovs-vsctl call")

    def add_argv(self, name: str) -> list[str]:
        """ovs-vsctl add-port of link `name` with these records and this OpenFlow port, in one transaction.

        `ofport=N` is a hint ovs-vswitchd honours when the number is free, and leaves the record as it was
        (ofport_request would stay behind, and take the number from another port): the caller reads it back.
        """
        argv = [*VSCTL, "add-port", self.bridge, name]
        port = [arg for col, v in self.port if not _is_default(v) for arg in assignments(col, v)]
        if port:
            argv += ["--", "set", "Port", name, *port]
        iface = [arg for col, v in self.iface if not _is_default(v) for arg in assignments(col, v)]
        if self.ofport is not None:
            iface.append(f"ofport={self.ofport}")
        return argv + (["--", "set", "Interface", name, *iface] if iface else [])

    def as_dict(self) -> dict:
        return {"bridge": self.bridge, "port": [list(c) for c in self.port], "iface": [list(c) for c in self.iface],
                "ofport": self.ofport}

    @staticmethod
    def from_dict(data: object) -> OvsPort:
        """The inverse of as_dict, every value validated (a record is input)."""
        if not isinstance(data, dict) or set(data) != {"bridge", "port", "iface", "ofport"}:
            raise InputError(f"an Open vSwitch port must have bridge, port, iface and ofport: {data!r:.200}")
        for key in ("port", "iface"):
            if not isinstance(data[key], list) or not all(isinstance(c, list) and len(c) == 2 for c in data[key]):
                raise InputError(f"Open vSwitch {key} columns are not a list of [column, value]")
        return OvsPort(data["bridge"], tuple((c, v) for c, v in data["port"]),
                       tuple((c, v) for c, v in data["iface"]), data["ofport"])


_JSON_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's own whitespace (RFC 8259), nothing else
_DECODER = json.JSONDecoder()


def _rows(text: str) -> list[list[dict]]:
    """The tables of `ovs-vsctl --format=json` output (one JSON object per command), as lists of {column: value}.

    The documents are decoded one after the other, separated by JSON whitespace only: a value OVSDB holds may
    contain any character but NUL, and ovs-vsctl writes U+2028, U+2029 and U+0085 unescaped, which
    str.splitlines() would take for line breaks (issue 19). Output of any other shape is a failure to read
    (CommandError), never "no rows".
    """
    tables = []
    pos = _JSON_SPACE.match(text).end()
    try:
        while pos < len(text):
            doc, pos = _DECODER.raw_decode(text, pos)
            pos = _JSON_SPACE.match(text, pos).end()
            headings, data = doc["headings"], doc["data"]
            if not (isinstance(headings, list) and isinstance(data, list)
                    and all(isinstance(row, list) and len(row) == len(headings) for row in data)):
                raise ValueError("not a table")
            tables.append([dict(zip(headings, row)) for row in data])
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise runner.refused("ovs", f"ovs-vsctl printed what is not its JSON tables ({type(e).__name__}: {e})") \
            from None
    return tables


def lookup_argv(name: str) -> list[str]:
    return [*VSCTL, "--format=json",
            "--", "--if-exists", f"--columns=_uuid,name,{','.join(PORT_COLUMNS)}", "list", "Port", name,
            "--", "--if-exists", f"--columns=name,{','.join(_IFACE_READ)}", "list", "Interface", name,
            "--", "--columns=name,ports", "list", "Bridge"]


def lookup(name: str) -> OvsPort | None:
    """The OVS port named `name` with its records and bridge, or None when OVSDB has no such port. Read-only.

    Raises (fails closed) when ovs-vsctl fails, and InputError for a port OVS reports an error for or that is not a
    system interface (a vhost-user port of openvswitch_dpdk has no tap netfw could move).
    """
    tables = _rows(runner.read(lookup_argv(name)).stdout)
    ports, ifaces, bridges = tables if len(tables) == 3 else ([], [], [])
    if len(tables) != 3:
        raise runner.refused("ovs", f"unexpected ovs-vsctl output for {name}")
    if not ports:
        return None
    if not ifaces:
        raise InputError(f"Open vSwitch port {name} has no interface of the same name")
    port, iface = ports[0], ifaces[0]
    uuid = port["_uuid"]
    owners = [b["name"] for b in bridges if uuid == b["ports"] or uuid in (b["ports"][1] if b["ports"][0] == "set"
                                                                                   else [])]
    if len(owners) != 1:
        raise runner.refused("ovs", f"Open vSwitch port {name} is on {len(owners)} bridges")
    if iface.get("type") not in ("", "system"):
        raise InputError(f"Open vSwitch port {name} is of type {iface.get('type')!r}, not a tap netfw can move "
                         "(openvswitch_dpdk vhost-user ports have none)")
    ofport = iface.get("ofport")
    if type(ofport) is not int or ofport < 1:
        raise InputError(f"Open vSwitch port {name} has no OpenFlow port ({iface.get('error')!r})")
    return OvsPort(owners[0], tuple((c, port[c]) for c in PORT_COLUMNS), tuple((c, iface[c]) for c in IFACE_COLUMNS),
                   ofport)


def ofport_of(name: str) -> tuple[object, object]:
    """(ofport, error) of interface `name` as OVS has it now. Read-only; raises when ovs-vsctl fails."""
    out = runner.read([*VSCTL, "--format=json", "--", "--columns=ofport,error", "list", "Interface", name]).stdout
    tables = _rows(out)
    if len(tables) != 1:
        raise runner.refused("ovs", f"unexpected ovs-vsctl output for {name}")
    rows = tables[0]
    if not rows:
        return None, "no such interface"
    return rows[0]["ofport"], rows[0]["error"]


def bridge_exists(bridge: str) -> bool:
    """True when OVSDB has bridge `bridge` (`br-exists`: 0 yes, 2 no, anything else a failure to see)."""
    return runner.read([*VSCTL, "br-exists", bridge], ok=(0, 2)).code == 0


def del_port_argv(bridge: str, name: str) -> list[str]:
    """Delete port `name` of `bridge` if it is there (`--if-exists` tolerates exactly "no such port"; a port of
    another bridge is still an error). Waits for ovs-vswitchd (no --no-wait): it must have closed the old netdev
    before a same-named link is added."""
    return [*VSCTL, "--if-exists", "del-port", bridge, name]
