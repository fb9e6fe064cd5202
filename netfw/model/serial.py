"""A NicSpec as a JSON-ready dict and back (the state directory's records, `--json` output): reading back is one
more entry point, so every field goes through the model's own checks again and anything unknown is refused."""

from __future__ import annotations

from dataclasses import asdict, fields

from netfw.errors import InputError
from .spec import Bandwidth, NicSpec, Rule, check_rule_count


def spec_to_dict(spec: NicSpec) -> dict:
    """A JSON-ready dict of spec (for the state directory and --json output)."""
    data = asdict(spec)
    data["ips"] = list(spec.ips)
    data["sg_ids"] = list(spec.sg_ids)
    data["rules"] = None if spec.rules is None else [asdict(r) for r in spec.rules]
    data["bandwidth"] = None if spec.bandwidth is None else asdict(spec.bandwidth)
    return data


_SPEC_KEYS = frozenset(f.name for f in fields(NicSpec))
_RULE_KEYS = frozenset(f.name for f in fields(Rule))


def _record_rule(item: object) -> Rule:
    if not isinstance(item, dict) or not set(item) <= _RULE_KEYS:
        raise InputError(f"a rule is not an object with the keys {', '.join(sorted(_RULE_KEYS))}")
    try:
        return Rule(**item)
    except TypeError as e:  # a required key missing
        raise InputError(f"rule {item!r}: {e}") from None


def spec_from_dict(data: object) -> NicSpec:
    """The inverse of spec_to_dict, for data read back from a file: InputError for any missing, unknown or bad field."""
    if not isinstance(data, dict):
        raise InputError("spec: not an object")
    unknown = sorted(map(str, set(data) - _SPEC_KEYS))
    if unknown:
        raise InputError(f"spec: unknown field(s) {', '.join(unknown)}")
    given = dict(data)
    for key in ("ips", "sg_ids"):
        if not isinstance(given.get(key, []), list):
            raise InputError(f"spec: {key} is not a list")
        given[key] = tuple(given.get(key, ()))
    rules = given.get("rules")
    if rules is not None:
        if not isinstance(rules, list):
            raise InputError("spec: rules is neither null nor a list")
        check_rule_count(len(rules))
        given["rules"] = tuple(_record_rule(r) for r in rules)
    limits = given.get("bandwidth")
    if limits is not None:
        keys = {f.name for f in fields(Bandwidth)}
        if not isinstance(limits, dict) or not set(limits) <= keys:
            raise InputError(f"spec: bandwidth is not an object with the keys {', '.join(sorted(keys))}")
        given["bandwidth"] = Bandwidth(**limits)
    try:
        return NicSpec(**given)
    except TypeError as e:  # vm, nic or bridge missing
        raise InputError(f"spec: {e}") from None
