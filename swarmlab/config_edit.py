"""[[hosts]] edits of swarmlab.toml for `host add/rm`: the instructor's file keeps its comments
and layout (tomlkit), and the result is validated whole before it is written."""

from __future__ import annotations

import tomllib

from swarmlab.config import LOCAL_HOST, Config, ConfigError, HostSpec, parse


def with_host_added(text: str, host: HostSpec, source: str, current: Config) -> str:
    """The config text with one more [[hosts]] entry; validated as a whole before it is returned.
    The first added host brings this host along as `local`, so that it keeps taking labs."""
    import tomlkit
    doc = tomlkit.parse(text)
    hosts = doc.get("hosts")
    if hosts is None:
        hosts = tomlkit.aot()
        doc["hosts"] = hosts
        if host.name != LOCAL_HOST and host.uri != current.uri:
            hosts.append(_host_table(HostSpec(LOCAL_HOST, current.uri)))
    hosts.append(_host_table(host))
    out = tomlkit.dumps(doc)
    parse(tomllib.loads(out), source)  # one clear line for a repeated name, URI or overlapping range
    return out


def with_host_removed(text: str, name: str, source: str) -> str:
    import tomlkit
    doc = tomlkit.parse(text)
    hosts = doc.get("hosts") or []
    kept = [h for h in hosts if h.get("name") != name]
    if len(kept) == len(hosts):
        raise ConfigError(f"{source} has no host {name}: `swarmlab host ls` lists the hosts")
    if kept:
        table = tomlkit.aot()
        for h in kept:
            table.append(h)
        doc["hosts"] = table
    else:
        del doc["hosts"]
    out = tomlkit.dumps(doc)
    parse(tomllib.loads(out), source)
    return out


def _host_table(host: HostSpec):
    import tomlkit
    table = tomlkit.table()
    table["name"] = host.name
    table["uri"] = host.uri
    if host.nodes:
        table["nodes"] = host.nodes
    if host.memory_mib:
        table["memory_mib"] = host.memory_mib
    if host.lab_range:
        table["lab_range"] = str(host.lab_range)
    if host.ssh:
        table["ssh"] = host.ssh
    if host.ssh_key:
        table["ssh_key"] = str(host.ssh_key)
    if host.pool_dir:
        table["pool_dir"] = str(host.pool_dir)
    return table
