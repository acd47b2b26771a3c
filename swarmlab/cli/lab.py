"""A lab: `up`, `status`, `swarm form`, `ssh`, `docker`, `down`, `ls`."""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Optional

import typer

from swarmlab import config as configuration
from swarmlab.cli.common import (LAB_FINISH, JsonOption, LabOption, NodeArgument, NodeBoard, app, ctx, emit_json,
                                 enter_host, table)
from swarmlab.config_values import parse_label
from swarmlab.cli.deferred import deferred

formation = deferred("swarmlab.lab.formation")
labs = deferred("swarmlab.lab.model")
lab_down = deferred("swarmlab.lab.lab_down")
session = deferred("swarmlab.lab.session")
snapshots = deferred("swarmlab.lab.snapshots")
swarm_status = deferred("swarmlab.lab.swarm_status")


@app.command()
def up(count: int = typer.Argument(..., metavar="N", help="Number of nodes the lab should have."),
       lab: Optional[str] = LabOption,
       template: Optional[str] = typer.Option(None, "--template", help="Template domain (default: [libvirt] template)."),
       prefix: Optional[str] = typer.Option(None, "--prefix", help="Node name prefix (default: swr, as in swr1)."),
       managers: Optional[int] = typer.Option(None, "--managers", "-m", metavar="M",
                                              help="Swarm managers (default: 3 from 3 nodes up, else 1)."),
       label: list[str] = typer.Option([], "--label", "-l", metavar="NODE:KEY=VALUE",
                                       help="Node label for placement exercises; repeatable."),
       no_swarm: bool = typer.Option(False, "--no-swarm", help="Stop at SSH-ready nodes; do not form the swarm."),
       no_snapshot: bool = typer.Option(False, "--no-snapshot",
                                        help="Do not save the `formed` snapshot that `reset` returns to."),
       as_json: bool = JsonOption):
    """Create and boot N linked clones in parallel, reserve their addresses, register their DNS
    names, wait for SSH, form the swarm and save the `formed` snapshot. Rerunning converges; a
    larger N adds nodes."""
    enter_host()
    config = ctx.config
    if template:
        import dataclasses
        config = dataclasses.replace(config, template=template)
    name = lab or config.lab
    labels = [parse_label(spec) for spec in (*config.labels, *label)]
    started = time.monotonic()
    with NodeBoard() as board:
        result, report, added = formation.make_lab(config, count, name, prefix or config.prefix, managers,
                                                   labels, not no_swarm, board, LAB_FINISH,
                                                   read_baseline=not no_snapshot)
    snapshot = None
    if report and not no_snapshot:
        snapshot = snapshots.keep_formed(config, name, report.changed or bool(added), ctx.progress,
                                         baseline=report.baseline)
    seconds = round(time.monotonic() - started, 1)
    if as_json:
        emit_json({"lab": result.name, "seconds": seconds, "swarm": report.shown() if report else None,
                    "snapshot": {"name": snapshot.name, "seconds": snapshot.seconds, "bytes": snapshot.bytes}
                    if snapshot else None,
                    "nodes": [{"node": n.name, "domain": n.domain, "ip": n.ip, "dns": n.fqdn, "mac": n.mac,
                               "host_key": n.host_key_source, "start": n.start,
                               "phases": board.phases.get(n.name, {})}
                              for n in result.nodes]})
        return
    for n in result.nodes:
        typer.echo(f"{n.name:<8} {n.ip:<15} {n.fqdn:<40} {HOW_STARTED.get(n.start, '')}".rstrip())
    if report:
        _render_form_report(report)
    if snapshot:
        typer.echo(f"+ snapshot {snapshot.name}: {snapshot.seconds:.1f} s, {snapshot.bytes / 2**20:.0f} MiB "
                   f"(`swarmlab reset` returns here)")
    typer.echo(f"lab {result.name}: {len(result.nodes)} node{'s' if len(result.nodes) != 1 else ''} "
               f"{'in a swarm ' if report else ''}ready in {seconds:.1f} s")


HOW_STARTED = {"wake": "woken from the template's saved state", "boot": "booted"}


def _render_form_report(report) -> None:
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if report.initialized:
        typer.echo(f"+ swarm initialised on {report.initialized}")
    for line in report.engine + report.images:
        typer.echo(f"+ {line}")
    for line in report.joined:
        typer.echo(f"+ joined {line}")
    for node in report.promoted:
        typer.echo(f"+ promoted {node} to manager")
    for node in report.demoted:
        typer.echo(f"+ demoted {node} to worker")
    for line in report.labels:
        typer.echo(f"+ label {line}")


@app.command()
def status(lab: Optional[str] = LabOption, as_json: bool = JsonOption):
    """One row per node: domain state, IP, DNS name, SSH, and the swarm's view of it (role,
    manager status, availability, node status, engine). Exit 3 if the lab does not exist."""
    enter_host()
    data = swarm_status.status_with_swarm(ctx.config, lab or ctx.config.lab)
    data["snapshots"] = [r.name for r in snapshots.list_snapshots(ctx.config, lab or ctx.config.lab)]
    if as_json:
        emit_json(data)
        return
    rows = []
    for row in data["nodes"]:
        dns_name = row["dns"] if row["dns_ip"] == row["ip"] else f"{row['dns']} (DNS: {row['dns_ip'] or 'none'})"
        rows.append((row["node"], row["state"] + (" (cut off)" if row.get("cut_off") else ""), row["ip"], dns_name, "yes" if row["ssh"] else "no",
                     row["role"] or "-", row["manager_status"] or "-", row["availability"] or "-",
                     row["node_status"] or "-", row["engine"] or "-"))
    table(("NODE", "STATE", "IP", "DNS", "SSH", "ROLE", "MANAGER", "AVAIL", "STATUS", "ENGINE"), rows)
    if data.get("snapshots"):
        typer.echo("snapshots: " + ", ".join(data["snapshots"]))
    if data.get("swarm_error"):
        typer.echo(f"swarm: {data['swarm_error']}", err=True)
    if data.get("dns_error"):
        typer.echo(f"DNS: {data['dns_error']}", err=True)


swarm_app = typer.Typer(no_args_is_help=True, help="The lab's Docker Swarm.")
app.add_typer(swarm_app, name="swarm")


@swarm_app.command("form")
def swarm_form(lab: Optional[str] = LabOption,
               managers: Optional[int] = typer.Option(None, "--managers", "-m", metavar="M",
                                                      help="Swarm managers (default: 3 from 3 nodes up, else 1)."),
               label: list[str] = typer.Option([], "--label", "-l", metavar="NODE:KEY=VALUE",
                                               help="Node label; repeatable."),
               as_json: bool = JsonOption):
    """(Re)form the swarm on an existing lab. Nodes already in it are left alone; missing ones join."""
    enter_host()
    labels = [parse_label(spec) for spec in (*ctx.config.labels, *label)]
    with NodeBoard() as board:
        report = formation.form_lab(ctx.config, lab or ctx.config.lab, managers, labels, board)
    if as_json:
        emit_json({"changed": report.changed, **report.shown()})
        return
    _render_form_report(report)
    typer.echo("swarm formed" if report.changed else "swarm already formed; nothing changed")




@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ssh(typer_ctx: typer.Context, node: str = NodeArgument, lab: Optional[str] = LabOption):
    """A shell on a node, or one command after `--`, with the lab's key and known_hosts."""
    enter_host()
    argv = session.ssh_command(ctx.config, lab or ctx.config.lab, node, list(typer_ctx.args))
    os.execvp(argv[0], argv)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def docker(typer_ctx: typer.Context, node: str = NodeArgument, lab: Optional[str] = LabOption):
    """Run `docker ARGS` on a node: swarmlab docker swr1 -- node ls"""
    enter_host()
    if not typer_ctx.args:
        raise configuration.ConfigError("give docker's arguments after `--`, e.g. swarmlab docker swr1 -- node ls")
    argv = session.ssh_command(ctx.config, lab or ctx.config.lab, node, ["docker", *map(shlex.quote, typer_ctx.args)])
    os.execvp(argv[0], argv)


@app.command()
def down(lab: Optional[str] = LabOption,
         yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
         as_json: bool = JsonOption):
    """Remove the lab's domains, volumes, DHCP reservations, DNS records and known_hosts. Idempotent."""
    enter_host()
    name = lab or ctx.config.lab
    if not yes:
        if not sys.stdin.isatty():
            raise configuration.ConfigError(f"`down` removes every node of lab {name}: pass --yes to confirm")
        typer.confirm(f"Remove lab {name} and everything in it?", abort=True)
    removed = lab_down.down(ctx.config, name, ctx.progress)
    if as_json:
        emit_json({"lab": name, "removed": removed})
        return
    if not removed:
        typer.echo(f"lab {name} does not exist; nothing to remove")
        return
    for item in removed:
        typer.echo(f"- {item}")
    typer.echo(f"lab {name} is gone")


@app.command("ls")
def list_labs(as_json: bool = JsonOption):
    """All labs on this host, with node counts and states."""
    enter_host()
    data = labs.list_labs(ctx.config)
    for row in data:
        row["snapshots"] = [r.name for r in snapshots.list_snapshots(ctx.config, row["lab"])]
    if as_json:
        emit_json(data)
        return
    if not data:
        typer.echo("no labs; create one with `swarmlab up 3`")
        return
    table(("LAB", "HOST", "NETWORK", "NODES", "RUNNING", "STATES", "SNAPSHOTS"),
          [(r["lab"], r["host"], r["network"], r["nodes"], r["running"], ", ".join(r["states"]),
             ", ".join(r["snapshots"]) or "-") for r in data], right={"NODES", "RUNNING"})
