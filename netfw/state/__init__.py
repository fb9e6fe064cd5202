"""What netfw keeps on disk: NIC records and journals (records.py), the state directory with its per-VM locks
(directory.py), opened safely (fs.py: no symlink followed, atomic writes, owner and mode checked), and
OpenNebula's pending records (pending.py). The names below are the state API the layers above use as `state.X`.

May import: netfw.kernel, netfw.rules, netfw.model and the bottom.
"""

from .directory import (StateDir, check_existing, check_named_by_caller, load, nics, opened, vm_lock,
                        write)
from .fs import StateError
from .records import (DEFAULT_STATE_DIR, MAX_RECORD, OPS, RECORD_KEYS, Applied, Intent, document, nic_path, parse,
                      parse_intent, state_dir)

__all__ = ["StateDir", "check_existing", "check_named_by_caller", "load", "nics", "opened", "vm_lock", "write",
           "StateError", "DEFAULT_STATE_DIR", "MAX_RECORD", "OPS", "RECORD_KEYS", "Applied", "Intent", "document",
           "nic_path", "parse", "parse_intent", "state_dir"]
