"""What `host up` started and where (`<state_dir>/host.json`), read by every command: the
namespace to enter, and the registry mirror the nodes pull through. Below every feature, so
that making a lab needs nothing of `host up` itself."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swarmlab.adapters.daemons import registry_server, services_registry_server
from swarmlab.adapters.netns import enter_netns, netns_exists
from swarmlab.adapters.netns import machine_networks as netns_machine_networks
from swarmlab.config import Config
from swarmlab.errors import SwarmlabError


class HostError(SwarmlabError):
    pass


# --- host state -----------------------------------------------------------------------------
@dataclass
class HostState:
    isolated: bool = False
    namespace: str | None = None
    started: list[str] = field(default_factory=list)  # daemons host up started: libvirtd, virtlogd
    pdns_pid: int | None = None
    registry_pid: int | None = None
    services_registry_pid: int | None = None
    ksm_before: dict | None = None  # KSM's settings before host up turned it on, for host down
    machine_addresses: list[str] = field(default_factory=list)  # this machine's own, as `host up` read them

    @staticmethod
    def path(config: Config) -> Path:
        return config.state_dir / "host.json"

    @classmethod
    def load(cls, config: Config) -> "HostState | None":
        try:
            data = json.loads(cls.path(config).read_text())
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in data.items() if k in known})
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            raise HostError(f"{cls.path(config)} is corrupt: run `swarmlab host down` then `host up`") from None

    def save(self, config: Config) -> None:
        path = self.path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


def enter_host(config: Config) -> HostState | None:
    """Every command starts here: inside the isolated host's namespace when there is one."""
    state = HostState.load(config)
    if state and state.isolated and state.namespace:
        if not netns_exists(state.namespace):
            raise HostError(f"the isolated lab host's namespace {state.namespace} is gone: "
                            "run `swarmlab host down`, then `swarmlab host up --isolated`")
        enter_netns(state.namespace)
    return state


def registry_address(config: Config) -> str | None:
    """The embedded host's registry mirror (host:port) when it runs, on the address the lab's
    nodes reach: the shared network's gateway, or [host] services_address for a lab on another
    machine. None when there is none."""
    state = HostState.load(config)
    if state is None:
        return None
    if config.host_remote:
        server, pid = services_registry_server(config), state.services_registry_pid
    else:
        server, pid = registry_server(config), state.registry_pid
    return server.address if server and server.running(pid) else None


def machine_networks(config: Config) -> list:
    """This machine's own addresses and networks: read now, or, in a process started inside the
    lab host's namespace, as `host up` read them."""
    live = netns_machine_networks(config.namespace)
    if live is not None:
        return live
    state = HostState.load(config)
    return [ipaddress.ip_interface(a) for a in (state.machine_addresses if state else [])]
