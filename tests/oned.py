"""What oned sends a network driver, built from a whole VM document (`onevm show -x`) the way oned builds it.

Facts (OpenNebula/one @ f847cf2e, read with the search tool's fetch; no code copied):
- `src/vmm_mad/exec/one_vmm_exec.rb`, `get_vnm_drivers`: for `pre`, `post`, `clean` and `update_sg` the document is
  a new `<VM>` into which, for each path of `XPATH_LIST` (`ID`, `DEPLOY_ID`, `TEMPLATE/CONTEXT`, `USER_TEMPLATE`,
  `TEMPLATE/SECURITY_GROUP_RULE`, `HISTORY_RECORDS/HISTORY/{HOSTNAME,HID,DS_ID,VM_MAD}`) and then for every
  `TEMPLATE/NIC`, `TEMPLATE/NIC_ALIAS` and `TEMPLATE/PCI` with a non-empty `VN_MAD`, each matching element is added
  under *new* parent elements (`add_element_to_path` calls `add_element` for every path step, so each copied element
  gets a `TEMPLATE`, or `HISTORY_RECORDS/HISTORY`, of its own). The list of drivers is the VN_MADs of those NICs,
  NIC_ALIASes and PCI devices, in order, once each.
- `src/vnm_mad/one_vnm.rb`: that document is sent as `Base64.encode64(xml).delete("\\n")`: one line of base64.
- `one_vmm_exec.rb`, `update_nic`: the whole `VM` element, `Base64.encode64` (lines of 60 characters, each ending in
  a newline).
- The stdin of a driver action is `cat << 'EOT' | action args` with the base64 and a newline.
The copied elements keep their text as written (CDATA included): REXML re-serialises what it parsed. Here the copies
are the original bytes of each element, so a CDATA section stays a CDATA section.
"""

from __future__ import annotations

import base64
import xml.parsers.expat as expat

XPATH_LIST = ("ID", "DEPLOY_ID", "TEMPLATE/CONTEXT", "USER_TEMPLATE", "TEMPLATE/SECURITY_GROUP_RULE",
              "HISTORY_RECORDS/HISTORY/HOSTNAME", "HISTORY_RECORDS/HISTORY/HID", "HISTORY_RECORDS/HISTORY/DS_ID",
              "HISTORY_RECORDS/HISTORY/VM_MAD")  # fmt: skip
NIC_KINDS = ("NIC", "NIC_ALIAS", "PCI")

#: The actions whose document oned reduces; update_nic gets the whole VM.
REDUCED_ACTIONS = ("pre", "post", "clean", "update_sg")


class _Element:
    """An element of the whole document: its path below the root, its bytes, and its VN_MAD child's text."""

    def __init__(self, path: str, start: int):
        self.path, self.start, self.end = path, start, start
        self.children: list[_Element] = []
        self.text = ""

    def child_text(self, tag: str) -> str:
        for child in self.children:
            if child.path.rsplit("/", 1)[-1] == tag:
                return child.text.strip()
        return ""


def _elements(xml: bytes) -> list[_Element]:
    """Every element of the document in document order, with the byte span of its whole text (tags included)."""
    parser = expat.ParserCreate()
    stack: list[_Element] = []
    found: list[_Element] = []

    def start(tag, attrs):
        path = "/".join([*(e.path.rsplit("/", 1)[-1] for e in stack[1:]), tag]) if stack else ""
        elem = _Element(path, parser.CurrentByteIndex)
        if stack:
            stack[-1].children.append(elem)
        stack.append(elem)
        found.append(elem)

    def end(tag):
        elem = stack.pop()
        # CurrentByteIndex points at the end tag's '<' (or, for <X/>, at the start tag): find its '>'.
        elem.end = xml.index(b">", parser.CurrentByteIndex) + 1

    def chars(data):
        stack[-1].text += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    parser.Parse(xml, True)
    return found


def _wrap(path: str, body: bytes) -> bytes:
    """body under new parent elements for each step of path but the last (add_element_to_path)."""
    steps = path.split("/")[:-1]
    return b"".join(f"<{s}>".encode() for s in steps) + body + b"".join(f"</{s}>".encode() for s in reversed(steps))


def reduced(full: bytes | str) -> bytes:
    """The document oned sends `pre`, `post`, `clean` and `update_sg` for this whole VM document."""
    xml = full.encode() if isinstance(full, str) else full
    elements = _elements(xml)
    out = [b"<VM>"]
    for path in XPATH_LIST:
        out += [_wrap(path, xml[e.start:e.end]) for e in elements if e.path == path]
    for kind in NIC_KINDS:
        out += [_wrap(f"TEMPLATE/{kind}", xml[e.start:e.end]) for e in elements
                if e.path == f"TEMPLATE/{kind}" and e.child_text("VN_MAD")]
    out.append(b"</VM>")
    return b"".join(out)


def drivers(full: bytes | str) -> list[str]:
    """The network drivers oned runs for this VM, in order: the VN_MADs of its NICs, NIC_ALIASes and PCI devices."""
    xml = full.encode() if isinstance(full, str) else full
    found: list[str] = []
    for kind in NIC_KINDS:
        for e in _elements(xml):
            if e.path == f"TEMPLATE/{kind}" and e.child_text("VN_MAD") and e.child_text("VN_MAD") not in found:
                found.append(e.child_text("VN_MAD"))
    return found


def one_line(xml: bytes) -> bytes:
    """Ruby's Base64.encode64(xml).delete("\\n"), and the newline the here-document adds."""
    return base64.b64encode(xml) + b"\n"


def wrapped(xml: bytes) -> bytes:
    """Ruby's Base64.encode64(xml): lines of 60 characters, each ending in a newline (update_nic's standard input)."""
    b64 = base64.b64encode(xml)
    return b"".join(b64[i:i + 60] + b"\n" for i in range(0, len(b64), 60)) + b"\n"


#: How a test sends a whole VM document to an action: as oned does, or the `onevm show -x` document as it is (what
#: an operator pipes by hand, and the shape every test used before the reduced one was known).
SHAPES = ("oned", "onevm show -x")


def stdin_for(action: str, full: bytes | str, shape: str = "oned") -> bytes:
    """The standard input of a driver action for this VM, in the given shape."""
    xml = full.encode() if isinstance(full, str) else full
    if shape == "onevm show -x":
        return one_line(xml)
    if shape != "oned":
        raise ValueError(f"unknown shape {shape!r}")
    return one_line(reduced(xml)) if action in REDUCED_ACTIONS else wrapped(xml)


# --- how a driver runs its hooks, and what oned logs of a driver's output ---------------------------------------------
# Facts: src/vnm_mad/remotes/lib/vnm_driver.rb (run_hooks), src/mad/ruby/DriverLogger.rb, and DriverExecHelper.rb
# (get_info_from_execution), OpenNebula/one @ f847cf2e.


def run_hooks(driver_dir, action: str, args: list[str], stdin: str, env: dict | None = None) -> tuple[int, str]:
    """The driver's `<action>` after its own work (the bridge driver's `post`): every executable file of
    `<action>.d/`, sorted, run as `file args` with the driver's stdin. A hook's stdout is logged on success
    (DriverLogger.log: `INFO: <action>: <line>` on the driver's stderr) and its stderr dropped; a hook that exits
    non-zero raises `Error running <file>\\n<its stderr>`, which the bridge driver does not rescue: Ruby prints it
    (first line with the location and the class) and the driver exits 1. Returns (exit code, the driver's stderr)."""
    import subprocess
    from pathlib import Path

    folder = Path(driver_dir) / f"{action}.d"
    driver_err = ""
    for file in sorted(str(p) for p in folder.iterdir() if p.is_file() and p.stat().st_mode & 0o111):
        res = subprocess.run([file, *args], input=stdin, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            first, _, rest = f"Error running {file}\n{res.stderr}".partition("\n")
            driver_err += (f"{Path(driver_dir) / action}:52:in `run_hooks': {first} (RuntimeError)\n{rest}"
                           f"\tfrom {Path(driver_dir) / action}:52:in `<main>'\n")
            return 1, driver_err
        driver_err += "".join(f"INFO: {action}: {line}\n" for line in res.stdout.splitlines())
    return 0, driver_err


def vm_log(code: int, driver_stderr: str) -> tuple[list[str], str]:
    """What oned makes of a driver's stderr: the lines `ERROR|INFO|WARN|DEBUG: ...` go to the VM's log (as
    'LEVEL msg'); on failure the other lines, joined, are the error message (`-` when there are none)."""
    import re

    logged, other = [], ""
    for line in driver_stderr.splitlines():
        line = line.strip()
        m = re.match(r"^(ERROR|INFO|WARN|DEBUG):\s+(\d+)?\s*(.*)$", line)
        if m:
            logged.append(f"{m[1]} {m[3].strip()}")
        else:
            other += line
    return logged, ("-" if code == 0 or not other else other.replace("\n", " ").strip())
