"""`down`: a lab removed, exactly what its journal and libvirt's ownership metadata say is its
own: domains, volumes, DHCP reservations, DNS records, its own network and its folder. Every
domain's ownership is checked before anything is removed."""

from __future__ import annotations

import shutil
from typing import Callable

from swarmlab.adapters.dns import PowerDNS
from swarmlab.config import Config
from swarmlab.config_values import is_dns_label
from swarmlab.errors import Refused
from swarmlab.lab.model import LabError, LabNotFound, dns_lock, lab_dir
from swarmlab.lab.session import open_lab


def down(config: Config, lab: str, progress: Callable[[str], None] = lambda _m: None) -> list[str]:
    """What was removed; nothing when the lab does not exist."""
    if not is_dns_label(lab):
        raise LabError(f"lab name {lab!r} is not a DNS label")
    try:
        with open_lab(config, lab, lock=True) as session:
            return _remove(session.config, session.hv, session.lab, progress)
    except LabNotFound:
        return []


def _remove(config: Config, hv, found, progress: Callable[[str], None]) -> list[str]:
    lab = found.name
    removed: list[str] = []
    for node in found.nodes:
        state = hv.domain_state(node.domain)
        if state is not None and (state.owner is None or state.owner.get("lab") != lab):
            raise Refused(f"domain {node.domain} does not belong to lab {lab}; leaving the whole lab alone: "
                          f"remove {node.domain} from {lab_dir(config, lab) / 'lab.json'} if it is not yours")
    network_owned = hv.network_state(config.network).owner is not None
    for node in found.nodes:
        if hv.domain_state(node.domain) is not None:
            progress(f"removing {node.domain}")
            hv.undefine(node.domain)
            removed.append(f"domain {node.domain}")
        for volume in (node.volume, *node.extra_volumes):
            if hv.delete_volume(config.node_pool, volume):
                removed.append(f"volume {volume}")
        if network_owned and not config.lab_host and node.mac and hv.remove_reservation(config.network, node.mac):
            removed.append(f"reservation {node.mac} -> {node.ip}")
    names = [n.fqdn for n in found.nodes]
    if names:
        client = PowerDNS.from_config(config)
        present = {r.name for r in client.list_a(config.zone)}
        ours = [n for n in names if n in present]
        if ours:
            with dns_lock(config):
                client.delete_a(config.zone, ours)
                client.rectify(config.zone)
            removed += [f"record {n}" for n in ours]
    for split in hv.split_networks(lab):  # `chaos split` left running, or killed mid-drill
        removed += hv.remove_network(split)
    own = hv.network_state(config.network).owner if config.lab_host else None
    if own is not None and own.get("lab") == lab:  # the lab's own network, never the shared one
        removed += hv.remove_network(config.network)
    directory = lab_dir(config, lab)
    if (directory / "known_hosts").exists():
        removed.append(f"known_hosts of {lab}")
    shutil.rmtree(directory, ignore_errors=True)
    return removed
