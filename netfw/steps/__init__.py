"""Reversible steps, one per kernel object or move. See base.Step for the contract."""

from .base import Reverse, Step
from .bridge import FirewallBridge
from .netns import VmNamespace
from .record import Record
from .ruleset import FamilyRuleset
from .tap import CutOver
from .veth import VethPair

__all__ = ["Step", "Reverse", "VmNamespace", "FirewallBridge", "VethPair", "FamilyRuleset", "CutOver", "Record"]
