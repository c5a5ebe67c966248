"""Ansible inventories, read with Ansible's own InventoryManager (YAML/INI, groups, children, vars).

There is no default inventory: the samples under ``inventories/`` (documentation addresses) are to be
copied and edited, and a command that needs hosts says how to name them (:func:`require_inventory`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flows.common.errors import BadInput


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    vars: dict = field(default_factory=dict, compare=False, hash=False)


HOW_TO_SET = ("set INFEROPS_INVENTORY (or `inventory` in inferops.toml) to your Ansible inventory, "
              "or pass one; start from a copy of inventories/staging/")


def require_inventory(inventory: str | None) -> str:
    """``inventory``, else the configured one; with neither, BadInput saying how to set one."""
    if inventory:
        return inventory
    from flows.common.settings import get_settings

    configured = get_settings().inventory
    if not configured:
        raise BadInput(f"no inventory configured: {HOW_TO_SET}")
    return configured


def resolve_inventory(inv: str) -> Path:
    """A path, or a name under ``inventories/`` (``staging`` → inventories/staging/hosts.yml)."""
    p = Path(inv)
    if p.is_dir():
        p = p / "hosts.yml"
    if not p.exists() and "/" not in inv:
        p = Path("inventories") / inv / "hosts.yml"
    if not p.exists():
        raise BadInput(f"inventory {inv!r} not found")
    return p


def load_hosts(inventory: str, group: str = "all") -> list[Host]:
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    path = resolve_inventory(inventory)
    loader = DataLoader()
    im = InventoryManager(loader=loader, sources=[str(path)])
    if group != "all" and group not in im.groups:
        raise BadInput(f"group {group!r} not in inventory {path}")
    vm = VariableManager(loader=loader, inventory=im)
    hosts = []
    for h in im.get_hosts(pattern=group):
        v = vm.get_vars(host=h)
        hosts.append(Host(
            name=h.name,
            address=str(v.get("ansible_host", h.name)),
            port=int(v.get("ansible_port", 22)),
            user=v.get("ansible_user"),
            key_file=v.get("ansible_ssh_private_key_file"),
            vars={k: val for k, val in v.items() if not k.startswith("ansible_") and isinstance(val, str | int | float | bool)},
        ))
    return hosts
