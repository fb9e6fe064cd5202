"""Reversible steps, one per kernel object or move (namespace, veth pair, firewall bridge, rulesets, ipsets,
shaping, the cut-over, records and journals). See base.Step for the contract.

May import: netfw.state, netfw.kernel, netfw.rules, netfw.model and the bottom.
"""

from .base import Reverse, Step
from .bridge import FirewallBridge
from .netns import VmNamespace
from .record import Record
from .ruleset import FamilyRuleset
from .tap import CutOver
from .veth import VethPair

__all__ = ["Step", "Reverse", "VmNamespace", "FirewallBridge", "VethPair", "FamilyRuleset", "CutOver", "Record"]
