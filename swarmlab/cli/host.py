"""`host`, `template`, `doctor` and `config`: the lab host, its template and settings."""

from __future__ import annotations

from typing import Optional

import typer

from swarmlab import config as configuration
from swarmlab.cli.common import JsonOption, app, ctx, emit_json, enter_host, table
from swarmlab.cli.deferred import deferred
from swarmlab.config_values import DEFAULT_SUITE, SUITES

lab_hosts = deferred("swarmlab.host.lab_hosts")
labhost = deferred("swarmlab.host.labhost")
template = deferred("swarmlab.host.template")
templates = deferred("swarmlab.host.template_build")
checks = deferred("swarmlab.lab.doctor")

host_app = typer.Typer(no_args_is_help=True, help="The embedded lab host: libvirtd, lab network, PowerDNS.")
template_app = typer.Typer(no_args_is_help=True, help="The Debian template VM that nodes are cloned from.")
app.add_typer(host_app, name="host")
app.add_typer(template_app, name="template")


@host_app.command("up")
def host_up(isolated: bool = typer.Option(False, "--isolated",
                                          help="Run libvirtd, the lab network, PowerDNS and every VM inside a "
                                               "network namespace of their own."),
            as_json: bool = JsonOption):
    """Start libvirtd, the lab network (NAT + DHCP) and PowerDNS with the lab zone. Idempotent."""
    changes = labhost.host_up(ctx.config, isolated, ctx.progress)
    if as_json:
        emit_json({"changed": bool(changes), "changes": changes, "status": labhost.host_status(ctx.config)})
        return
    for change in changes:
        typer.echo(f"+ {change}")
    typer.echo("lab host is up" + ("" if changes else "; nothing changed")
               + (f" (namespace {ctx.config.namespace})" if isolated else ""))


@host_app.command("status")
def host_status(as_json: bool = JsonOption):
    """Show the lab host's parts. Exit 0 when it is up, 1 when partly up, 3 when down."""
    enter_host()
    status = labhost.host_status(ctx.config)
    if as_json:
        emit_json(status)
    else:
        if status.get("namespace"):
            typer.echo(f"namespace  {status['namespace']}  {'present' if status.get('namespace_exists') else 'MISSING'}")
        if "libvirtd_pid" in status:
            typer.echo(f"libvirtd   {'pid ' + str(status['libvirtd_pid']) if status['libvirtd_pid'] else 'not running'}")
            net = status["network"]
            typer.echo(f"network    {net['name']}  {'active' if net['active'] else 'inactive'}"
                       + (f"  bridge {net['bridge']}  gateway {net['gateway']}" if net["active"] else ""))
            pdns = status["pdns"]
            typer.echo(f"powerdns   {'pid ' + str(pdns['pid']) if pdns['pid'] else 'not running'}  api {pdns['api_url']}"
                       f"  dns {pdns['dns']}  zone {ctx.config.zone} "
                       + ("present" if pdns.get("zone") else pdns.get("error", "missing")))
            registry = status["registry"]
            typer.echo(f"registry   {'pid ' + str(registry['pid']) if registry['pid'] else 'not running'}  "
                       f"mirror http://{registry['address']} (the offline stand-ins)")
            if "ksm" in status:
                typer.echo("ksm        " + (f"on, {status['ksm']['saved_mib']} MiB of guest memory shared"
                                            if status["ksm"]["on"] else
                                            "off (`host up` turns it on unless [host] ksm = false)"))
        typer.echo("lab host is " + ("up" if status["up"] else "down" if "libvirtd_pid" not in status else "partly up"))
    if not status["up"]:
        raise typer.Exit(3 if "libvirtd_pid" not in status else 1)


@host_app.command("down")
def host_down(as_json: bool = JsonOption):
    """Stop what `host up` started and remove its namespace. Cached template images are kept."""
    changes = labhost.host_down(ctx.config, ctx.progress)
    if as_json:
        emit_json({"changed": bool(changes), "changes": changes})
        return
    for change in changes:
        typer.echo(f"- {change}")
    typer.echo("lab host is down" + ("" if changes else "; it was not up"))


@template_app.command("build")
def template_build(name: Optional[str] = typer.Option(None, "--name", help="Domain name (default: [libvirt] template)."),
                   no_engine: bool = typer.Option(False, "--no-engine", help="Leave the Docker engine out "
                                                  "(for testing swarmlab's own engine install)."),
                   suite: str = typer.Option(DEFAULT_SUITE, "--suite",
                                             help=f"Debian release: {' or '.join(SUITES)}."),
                   no_wake: bool = typer.Option(False, "--no-wake", help="Save no wake-up state: clones "
                                                "boot instead of waking (slower, one boot less here)."),
                   as_json: bool = JsonOption):
    """Build the Debian template image (cached by recipe), define it as a shut-off domain, and
    save the booted state its clones wake from (once per recipe)."""
    # No enter_host(): mmdebstrap needs the Debian mirror, which the lab namespace cannot reach,
    # and libvirt's socket is reachable from anywhere.
    if suite not in SUITES:
        raise typer.BadParameter(f"{suite} is not a release swarmlab builds: use {' or '.join(SUITES)}",
                                 param_hint="--suite")
    result = templates.template_build(ctx.config, name or ctx.config.template, not no_engine, ctx.progress, suite,
                                      wake=not no_wake)
    if as_json:
        emit_json(result)
        return
    how = "built" if result["built"] else "found in the cache"
    typer.echo(f"template {result['name']}: recipe {result['recipe']} {how}, "
               f"{'defined' if result['defined'] else 'already defined'} ({result['domain_type']}), "
               f"disk {result['disk_bytes'] / 2**20:.0f} MiB, {result['seconds']:.1f} s")
    wake = result["wake"]
    if wake.get("built"):
        typer.echo(f"wake-up state saved in {wake['seconds']:.1f} s ({wake['bytes'] / 2**20:.0f} MiB): clones wake "
                   "instead of booting")
    elif wake.get("volume"):
        typer.echo("wake-up state found: clones wake instead of booting")
    else:
        typer.echo(f"no wake-up state ({wake['why']}): clones boot")


@host_app.command("add")
def host_add(uri: str = typer.Argument(..., metavar="URI", help="libvirt URI, e.g. qemu+ssh://root@h2/system."),
             name: Optional[str] = typer.Option(None, "--name", help="Host name (default: from the URI)."),
             nodes: Optional[int] = typer.Option(None, "--nodes", metavar="N", help="Capacity in nodes."),
             memory_mib: Optional[int] = typer.Option(None, "--memory-mib", metavar="MIB",
                                                      help="Capacity in host memory (default: 90 % of what libvirt reports)."),
             lab_range: Optional[str] = typer.Option(None, "--lab-range", metavar="CIDR",
                                                     help="Where its labs' /24s come from (default: [class] lab_range)."),
             ssh: Optional[str] = typer.Option(None, "--ssh", metavar="USER@HOST[:PORT]",
                                               help="Its sshd, which SSH to its nodes goes through "
                                                    "(default: from a qemu+ssh URI)."),
             ssh_key: Optional[str] = typer.Option(None, "--ssh-key", metavar="FILE",
                                                   help="Key for that sshd (default: root's own keys and agent)."),
             pool_dir: Optional[str] = typer.Option(None, "--pool-dir", metavar="DIR",
                                                    help="Where its template and nodes live on that machine "
                                                         "(default: /var/lib/libvirt/swarmlab)."),
             as_json: bool = JsonOption):
    """Add a libvirt host that class labs may be placed on, after checking that it answers.
    Written to the config file as [[hosts]]; its comments and layout are kept."""
    if nodes is not None and memory_mib is not None:
        raise configuration.ConfigError("give --nodes or --memory-mib, not both")
    values = {"name": name or lab_hosts.default_host_name(uri), "uri": uri}
    for key, value in (("nodes", nodes), ("memory_mib", memory_mib), ("lab_range", lab_range), ("ssh", ssh),
                       ("ssh_key", ssh_key), ("pool_dir", pool_dir)):
        if value is not None:
            values[key] = value
    spec = configuration.parse_hosts([values], "host add")[0]
    enter_host()
    result = lab_hosts.host_add(ctx.config, spec)
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"+ host {result['host']} ({result['uri']}, libvirt {result['libvirt']}) in {result['config']}")


@host_app.command("ls")
def host_ls(as_json: bool = JsonOption):
    """The hosts class labs go to: capacity, free nodes, the labs on each, and why a host takes none."""
    enter_host()
    rows = lab_hosts.host_ls(ctx.config)
    if as_json:
        emit_json(rows)
        return
    table(("HOST", "URI", "CAPACITY", "FREE", "LABS", "PROBLEM"),
          [(r["host"], r["uri"], r["capacity"] + (f", bound by {r['bound_by']}" if r["bound_by"] not in ("memory", "[[hosts]] nodes") else ""),
            r["free_nodes"], ",".join(r["labs"]) or "-", r["problem"] or "-")
            for r in rows], right={"FREE"})
    if rows:
        typer.echo(f"class nodes are held to {rows[0]['cpu_cap']} (`swarmlab doctor` says whether libvirt can)")


@host_app.command("rm")
def host_rm(name: str = typer.Argument(..., metavar="NAME"), as_json: bool = JsonOption):
    """Remove a host from the config file; refused while labs are placed on it."""
    result = lab_hosts.host_rm(ctx.config, name)
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"- host {result['host']} from {result['config']}")


@app.command()
def doctor(host: Optional[str] = typer.Option(None, "--host", metavar="URI|NAME",
                                              help="Check a class host instead: libvirt, pools, template, room."),
           as_json: bool = JsonOption):
    """Check libvirt, the lab network, the template, PowerDNS and the SSH key. Exit 1 if any fails."""
    enter_host()
    if host:
        spec = next((h for h in ctx.config.lab_hosts if host in (h.name, h.uri)), None) or \
            configuration.HostSpec(lab_hosts.default_host_name(host), host, lab_range=ctx.config.lab_range)
        results = checks.run_host_checks(ctx.config, spec)
    else:
        results = checks.run_checks(ctx.config)
    if as_json:
        emit_json({"ok": all(c["ok"] for c in results), "checks": results})
    else:
        for c in results:
            line = f"{'✓' if c['ok'] else '✗'} {c['check']:<9} {c['detail']}"
            typer.echo(line + (f"\n  fix: {c['fix']}" if c["fix"] else ""))
    if not all(c["ok"] for c in results):
        raise typer.Exit(1)


@app.command("config")
def show_config(as_json: bool = JsonOption):
    """Show the effective configuration and where it came from (never the API key)."""
    data = ctx.config.as_dict()
    if as_json:
        emit_json(data)
    else:
        for key, value in data.items():
            typer.echo(f"{key:<13} {value}")
