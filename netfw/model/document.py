"""Reading an OpenNebula VM document: bounded, plain XML or base64, parsed only once it is known to be small. Pure.

A document arrives from the control plane and is read by root, so every cost is bounded before it is paid:
- its size, before and after base64 decoding (and callers read at most MAX_INPUT + 1 bytes of a stream);
- its shape, by a first pass of expat that counts as it goes and stops at the first excess: nesting depth,
  elements and attributes (a DTD is refused there too, before it could declare an entity);
- expat's own cost per start tag grows faster than linearly with its attribute count, so a tag with too many
  attributes is found by a regular expression before expat sees the document at all.
Only then is the tree built, by defusedxml (DTDs, entities and external references forbidden once more).
Every problem raises InputError with one line.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.parsers.expat as expat
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as safe_et

from netfw.errors import InputError

#: Largest VM document accepted, in bytes after base64 decoding. Real ones are a few tens of KiB.
MAX_DOCUMENT = 4 * 1024 * 1024
#: Largest input accepted before decoding: base64 is 4/3 larger, plus its line breaks.
MAX_INPUT = 2 * MAX_DOCUMENT
#: Shape caps: a real document nests 4 deep, has a few thousand elements and no attributes but the root's xmlns.
MAX_DEPTH = 32
MAX_ELEMENTS = 131072
MAX_ATTRIBUTES = 1024  # in the whole document
MAX_TAG_ATTRIBUTES = 64  # on one element

# A start tag with MAX_TAG_ATTRIBUTES attributes. Exact for well-formed XML (a name has no whitespace, '=', '<',
# '>' or '/'; a value has no '<'); text that merely looks like such a tag is refused too, which no real document has.
_CROWDED_TAG = re.compile(
    rb"<[^\s<>/!?]+(?:\s+[^\s=<>/]+\s*=\s*(?:\"[^\"<]*\"|'[^'<]*')){%d}" % MAX_TAG_ATTRIBUTES)

_DTD = "a DTD is not allowed (entity expansion, XML bomb or external entity)"


def error(message: str) -> InputError:
    """An InputError about the VM document."""
    return InputError(f"VM document: {message}")


def _as_bytes(data: bytes | str) -> bytes:
    """The input as bytes, bounded, without a byte-order mark or surrounding whitespace."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_INPUT:
        raise error(f"input is larger than {MAX_INPUT} bytes")
    raw = raw.strip()
    return raw.removeprefix(b"\xef\xbb\xbf").strip()


def _decode(raw: bytes) -> bytes:
    """The XML text: raw itself if it looks like XML, else raw decoded from base64 (whitespace ignored)."""
    if not raw:
        raise error("it is empty")
    if raw.startswith(b"<"):
        return raw
    try:
        # translate, not split/join: megabytes of one-character lines would make millions of objects
        xml = base64.b64decode(raw.translate(None, b" \t\r\n\v\f"), validate=True)
    except (binascii.Error, ValueError):
        raise error("it is neither XML nor base64") from None
    xml = xml.strip().removeprefix(b"\xef\xbb\xbf").strip()
    if not xml.startswith(b"<"):
        raise error("it is base64, but what it decodes to is not XML")
    return xml


class _Excess(Exception):
    """The first pass stopped: the document exceeds a cap (the message says which)."""


def _measure(xml: bytes, fail=error) -> None:
    """Refuse a document over a shape cap, stopping at the first excess; syntax errors are left to the parse."""
    if _CROWDED_TAG.search(xml):
        raise fail(f"an element has {MAX_TAG_ATTRIBUTES} attributes or more (netfw's cap)")
    parser = expat.ParserCreate()
    depth = elements = attributes = 0

    def start(tag: str, attrs: list) -> None:
        nonlocal depth, elements, attributes
        depth, elements, attributes = depth + 1, elements + 1, attributes + len(attrs) // 2
        if depth > MAX_DEPTH:
            raise _Excess(f"it nests deeper than {MAX_DEPTH} elements (netfw's cap)")
        if elements > MAX_ELEMENTS:
            raise _Excess(f"it has more than {MAX_ELEMENTS} elements (netfw's cap)")
        if attributes > MAX_ATTRIBUTES:
            raise _Excess(f"it has more than {MAX_ATTRIBUTES} attributes (netfw's cap)")

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1

    def doctype(*args) -> None:
        raise _Excess(_DTD)  # before the DTD's first declaration: no entity is ever defined

    parser.ordered_attributes = True
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(xml, True)
    except _Excess as e:
        raise fail(str(e)) from None
    except expat.ExpatError:
        pass  # defusedxml reports it, with the same words


def parse(xml: bytes, fail=error) -> Element:
    """Parse XML text with DTDs, entities and external references forbidden, within the size and shape caps;
    fail(message) makes the InputError (the libvirt hook's domain XML names itself: netfw.opennebula.domain)."""
    if len(xml) > MAX_DOCUMENT:
        raise fail(f"it is {len(xml)} bytes, more than {MAX_DOCUMENT}")
    _measure(xml, fail)
    try:
        return safe_et.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden:
        raise fail(_DTD) from None
    except defusedxml.EntitiesForbidden:
        raise fail("entity declarations are not allowed (XML bomb?)") from None
    except defusedxml.ExternalReferenceForbidden:
        raise fail("external references are not allowed") from None
    except ParseError as e:
        raise fail(f"it is not well-formed XML ({e})") from None


def _strip_namespaces(root: Element) -> None:
    """Drop `{namespace}` prefixes from tags, so that a document carrying the schema's xmlns reads the same."""
    for elem in root.iter():
        if isinstance(elem.tag, str) and elem.tag.startswith("{"):
            elem.tag = elem.tag.split("}", 1)[1]


def read(data: bytes | str) -> Element:
    """The <VM> root element of a document given as plain XML or base64; InputError for anything else."""
    root = parse(_decode(_as_bytes(data)))
    _strip_namespaces(root)
    if root.tag != "VM":
        raise error(f"the root element is <{root.tag}>, not <VM>")
    return root
