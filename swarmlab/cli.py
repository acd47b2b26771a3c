"""The `swarmlab` command: parse, call the orchestration, render. No logic of its own."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from . import (__version__, chaos, classroom, config as configuration, doctor as checks, exercises, formation,
               lab as labs, labhost, logfile, reset as resets, swarm, template, template_build as templates)
from .errors import Refused, SwarmlabError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None,
                  help="Docker Swarm training labs on a libvirt host.")
host_app = typer.Typer(no_args_is_help=True, help="The embedded lab host: libvirtd, lab network, PowerDNS.")
template_app = typer.Typer(no_args_is_help=True, help="The Debian template VM that nodes are cloned from.")
app.add_typer(host_app, name="host")
app.add_typer(template_app, name="template")

JsonOption = typer.Option(False, "--json", help="Print a JSON document on stdout instead of text.")


class Context:
    config: configuration.Config
    started = time.monotonic()

    def progress(self, message: str) -> None:
        typer.echo(f"[{time.monotonic() - self.started:6.1f}s] {message}", err=True)


ctx = Context()


def _table(columns: tuple[str, ...], rows: list[tuple], indent: int = 0, right: set[str] = frozenset()) -> None:
    """A plain text table on stdout (rich lays it out; no colour, no box, any width)."""
    from rich.console import Console
    from rich.padding import Padding
    from rich.table import Table
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="", padding=(0, 2, 0, 0))
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    console = Console(width=500, no_color=True, highlight=False, soft_wrap=True)
    with console.capture() as captured:
        console.print(Padding(table, (0, 0, 0, indent)))
    for line in captured.get().splitlines():
        typer.echo(line.rstrip())


def _emit_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(config: Optional[str] = typer.Option(None, "--config", "-c", metavar="FILE",
                                               help="swarmlab.toml to use (else $SWARMLAB_CONFIG, ./swarmlab.toml, "
                                                    "/etc/swarmlab/swarmlab.toml, built-in defaults)."),
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit."),
          verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="Show the debug log (SSH, libvirt, HTTP) on stderr; otherwise it "
                                            "goes to <state_dir>/swarmlab.log.")):
    ctx.config = configuration.load(config)
    logfile.setup(ctx.config, verbose)


def _enter_host() -> None:
    labhost.enter_host(ctx.config)


@host_app.command("up")
def host_up(isolated: bool = typer.Option(False, "--isolated",
                                          help="Run libvirtd, the lab network, PowerDNS and every VM inside a "
                                               "network namespace of their own."),
            as_json: bool = JsonOption):
    """Start libvirtd, the lab network (NAT + DHCP) and PowerDNS with the lab zone. Idempotent."""
    changes = labhost.host_up(ctx.config, isolated, ctx.progress)
    if as_json:
        _emit_json({"changed": bool(changes), "changes": changes, "status": labhost.host_status(ctx.config)})
        return
    for change in changes:
        typer.echo(f"+ {change}")
    typer.echo("lab host is up" + ("" if changes else "; nothing changed")
               + (f" (namespace {ctx.config.namespace})" if isolated else ""))


@host_app.command("status")
def host_status(as_json: bool = JsonOption):
    """Show the lab host's parts. Exit 0 when it is up, 1 when partly up, 3 when down."""
    _enter_host()
    status = labhost.host_status(ctx.config)
    if as_json:
        _emit_json(status)
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
        typer.echo("lab host is " + ("up" if status["up"] else "down" if "libvirtd_pid" not in status else "partly up"))
    if not status["up"]:
        raise typer.Exit(3 if "libvirtd_pid" not in status else 1)


@host_app.command("down")
def host_down(as_json: bool = JsonOption):
    """Stop what `host up` started and remove its namespace. Cached template images are kept."""
    changes = labhost.host_down(ctx.config, ctx.progress)
    if as_json:
        _emit_json({"changed": bool(changes), "changes": changes})
        return
    for change in changes:
        typer.echo(f"- {change}")
    typer.echo("lab host is down" + ("" if changes else "; it was not up"))


@template_app.command("build")
def template_build(name: Optional[str] = typer.Option(None, "--name", help="Domain name (default: [libvirt] template)."),
                   no_engine: bool = typer.Option(False, "--no-engine", help="Leave the Docker engine out "
                                                  "(for testing swarmlab's own engine install)."),
                   suite: str = typer.Option(template.DEFAULT_SUITE, "--suite",
                                             help=f"Debian release: {' or '.join(template.SUITES)}."),
                   as_json: bool = JsonOption):
    """Build the Debian template image (cached by recipe) and define it as a shut-off domain."""
    # No _enter_host(): debootstrap needs the Debian mirror, which the lab namespace cannot reach,
    # and libvirt's socket is reachable from anywhere.
    if suite not in template.SUITES:
        raise typer.BadParameter(f"{suite} is not a release swarmlab builds: use {' or '.join(template.SUITES)}",
                                 param_hint="--suite")
    result = templates.template_build(ctx.config, name or ctx.config.template, not no_engine, ctx.progress, suite)
    if as_json:
        _emit_json(result)
        return
    how = "built" if result["built"] else "found in the cache"
    typer.echo(f"template {result['name']}: recipe {result['recipe']} {how}, "
               f"{'defined' if result['defined'] else 'already defined'} ({result['domain_type']}), "
               f"disk {result['disk_bytes'] / 2**20:.0f} MiB, {result['seconds']:.1f} s")


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
    values = {"name": name or classroom.default_host_name(uri), "uri": uri}
    for key, value in (("nodes", nodes), ("memory_mib", memory_mib), ("lab_range", lab_range), ("ssh", ssh),
                       ("ssh_key", ssh_key), ("pool_dir", pool_dir)):
        if value is not None:
            values[key] = value
    spec = configuration.parse_hosts([values], "host add")[0]
    _enter_host()
    result = classroom.host_add(ctx.config, spec)
    if as_json:
        _emit_json(result)
    else:
        typer.echo(f"+ host {result['host']} ({result['uri']}, libvirt {result['libvirt']}) in {result['config']}")


@host_app.command("ls")
def host_ls(as_json: bool = JsonOption):
    """The hosts class labs go to: capacity, free nodes, the labs on each, and why a host takes none."""
    _enter_host()
    rows = classroom.host_ls(ctx.config)
    if as_json:
        _emit_json(rows)
        return
    _table(("HOST", "URI", "CAPACITY", "FREE", "LABS", "PROBLEM"),
           [(r["host"], r["uri"], r["capacity"], r["free_nodes"], ",".join(r["labs"]) or "-", r["problem"] or "-")
            for r in rows], right={"FREE"})


@host_app.command("rm")
def host_rm(name: str = typer.Argument(..., metavar="NAME"), as_json: bool = JsonOption):
    """Remove a host from the config file; refused while labs are placed on it."""
    result = classroom.host_rm(ctx.config, name)
    if as_json:
        _emit_json(result)
    else:
        typer.echo(f"- host {result['host']} from {result['config']}")


@app.command()
def doctor(host: Optional[str] = typer.Option(None, "--host", metavar="URI|NAME",
                                              help="Check a class host instead: libvirt, pools, template, room."),
           as_json: bool = JsonOption):
    """Check libvirt, the lab network, the template, PowerDNS and the SSH key. Exit 1 if any fails."""
    _enter_host()
    if host:
        spec = next((h for h in ctx.config.lab_hosts if host in (h.name, h.uri)), None) or \
            configuration.HostSpec(classroom.default_host_name(host), host, lab_range=ctx.config.lab_range)
        results = checks.run_host_checks(ctx.config, spec)
    else:
        results = checks.run_checks(ctx.config)
    if as_json:
        _emit_json({"ok": all(c["ok"] for c in results), "checks": results})
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
        _emit_json(data)
    else:
        for key, value in data.items():
            typer.echo(f"{key:<13} {value}")


class NodeBoard:
    """One line per node with its phase (clone, boot, lease, dns, ssh, ready): a live table on a
    terminal, one log line per change otherwise."""

    def __init__(self, enabled: bool = True):
        from rich.console import Console
        self.console = Console(stderr=True)
        self.live = None
        self.rows: dict[str, tuple[str, str, float]] = {}
        self.phases: dict[str, dict[str, float]] = {}  # node -> phase -> seconds since start, when entered
        self.enabled = enabled
        self.started = time.monotonic()

    def __enter__(self):
        if self.enabled and self.console.is_terminal:
            from rich.live import Live
            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def _table(self):
        from rich.table import Table
        table = Table(box=None, header_style="bold")
        for col in ("node", "phase", "detail", "since start"):
            table.add_column(col)
        for node, (phase, detail, at) in self.rows.items():
            steps = " ".join(("●" if labs.PHASES.index(p) <= labs.PHASES.index(phase) else "○") for p in labs.PHASES) \
                if phase in labs.PHASES else ""
            table.add_row(node, f"{steps} {phase}".strip(), detail, f"{at:5.1f}s")
        return table

    def __call__(self, node: str, phase: str, detail: str) -> None:
        at = time.monotonic() - self.started
        self.rows[node] = (phase, detail, at)
        self.phases.setdefault(node, {}).setdefault(phase, round(at, 1))
        if not self.enabled:
            return
        if self.live:
            self.live.update(self._table())
        else:
            typer.echo(f"[{at:6.1f}s] {node}: {phase} {detail}".rstrip(), err=True)


LabOption = typer.Option(None, "--lab", help="Lab name (default: [nodes] lab in swarmlab.toml).")


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
    _enter_host()
    config = ctx.config
    if template:
        import dataclasses
        config = dataclasses.replace(config, template=template)
    name = lab or config.lab
    labels = [swarm.parse_label(spec) for spec in (*config.labels, *label)]
    started = time.monotonic()
    with NodeBoard() as board:
        result, report = formation.bring_up(config, count, name, prefix or config.prefix, managers, labels,
                                            not no_swarm, board)
    snapshot = None
    if report and not no_snapshot and (report.changed or resets.load_snapshot(config, name, resets.DEFAULT_SNAPSHOT)
                                       is None):
        snapshot = resets.save_snapshot(config, name, resets.DEFAULT_SNAPSHOT, progress=ctx.progress)
    seconds = round(time.monotonic() - started, 1)
    if as_json:
        _emit_json({"lab": result.name, "seconds": seconds, "swarm": asdict(report) if report else None,
                    "snapshot": {"name": snapshot.name, "seconds": snapshot.seconds, "bytes": snapshot.bytes}
                    if snapshot else None,
                    "nodes": [{"node": n.name, "domain": n.domain, "ip": n.ip, "dns": n.fqdn, "mac": n.mac,
                               "host_key": n.host_key_source, "phases": board.phases.get(n.name, {})}
                              for n in result.nodes]})
        return
    for n in result.nodes:
        typer.echo(f"{n.name:<8} {n.ip:<15} {n.fqdn}")
    if report:
        _render_form_report(report)
    if snapshot:
        typer.echo(f"+ snapshot {snapshot.name}: {snapshot.seconds:.1f} s, {snapshot.bytes / 2**20:.0f} MiB "
                   f"(`swarmlab reset` returns here)")
    typer.echo(f"lab {result.name}: {len(result.nodes)} node{'s' if len(result.nodes) != 1 else ''} "
               f"{'in a swarm ' if report else ''}ready in {seconds:.1f} s")


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
    _enter_host()
    data = formation.status_with_swarm(ctx.config, lab or ctx.config.lab)
    data["snapshots"] = [r.name for r in resets.list_snapshots(ctx.config, lab or ctx.config.lab)]
    if as_json:
        _emit_json(data)
        return
    rows = []
    for row in data["nodes"]:
        dns_name = row["dns"] if row["dns_ip"] == row["ip"] else f"{row['dns']} (DNS: {row['dns_ip'] or 'none'})"
        rows.append((row["node"], row["state"], row["ip"], dns_name, "yes" if row["ssh"] else "no",
                     row["role"] or "-", row["manager_status"] or "-", row["availability"] or "-",
                     row["node_status"] or "-", row["engine"] or "-"))
    _table(("NODE", "STATE", "IP", "DNS", "SSH", "ROLE", "MANAGER", "AVAIL", "STATUS", "ENGINE"), rows)
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
    _enter_host()
    labels = [swarm.parse_label(spec) for spec in (*ctx.config.labels, *label)]
    with NodeBoard() as board:
        report = formation.form_lab(ctx.config, lab or ctx.config.lab, managers, labels, board)
    if as_json:
        _emit_json({"changed": report.changed, **asdict(report)})
        return
    _render_form_report(report)
    typer.echo("swarm formed" if report.changed else "swarm already formed; nothing changed")


NodeArgument = typer.Argument(..., metavar="NODE", help="Node name, e.g. swr1.")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ssh(typer_ctx: typer.Context, node: str = NodeArgument, lab: Optional[str] = LabOption):
    """A shell on a node, or one command after `--`, with the lab's key and known_hosts."""
    _enter_host()
    argv = labs.ssh_command(ctx.config, lab or ctx.config.lab, node, list(typer_ctx.args))
    os.execvp(argv[0], argv)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def docker(typer_ctx: typer.Context, node: str = NodeArgument, lab: Optional[str] = LabOption):
    """Run `docker ARGS` on a node: swarmlab docker swr1 -- node ls"""
    _enter_host()
    if not typer_ctx.args:
        raise configuration.ConfigError("give docker's arguments after `--`, e.g. swarmlab docker swr1 -- node ls")
    argv = labs.ssh_command(ctx.config, lab or ctx.config.lab, node, ["docker", *map(shlex.quote, typer_ctx.args)])
    os.execvp(argv[0], argv)


@app.command()
def down(lab: Optional[str] = LabOption,
         yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
         as_json: bool = JsonOption):
    """Remove the lab's domains, volumes, DHCP reservations, DNS records and known_hosts. Idempotent."""
    _enter_host()
    name = lab or ctx.config.lab
    if not yes:
        if not sys.stdin.isatty():
            raise configuration.ConfigError(f"`down` removes every node of lab {name}: pass --yes to confirm")
        typer.confirm(f"Remove lab {name} and everything in it?", abort=True)
    removed = labs.down(ctx.config, name, ctx.progress)
    if as_json:
        _emit_json({"lab": name, "removed": removed})
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
    _enter_host()
    data = labs.list_labs(ctx.config)
    for row in data:
        row["snapshots"] = [r.name for r in resets.list_snapshots(ctx.config, row["lab"])]
    if as_json:
        _emit_json(data)
        return
    if not data:
        typer.echo("no labs; create one with `swarmlab up 3`")
        return
    _table(("LAB", "HOST", "NETWORK", "NODES", "RUNNING", "STATES", "SNAPSHOTS"),
           [(r["lab"], r["host"], r["network"], r["nodes"], r["running"], ", ".join(r["states"]),
             ", ".join(r["snapshots"]) or "-") for r in data], right={"NODES", "RUNNING"})


# Typer keeps its click private; its public BadParameter derives from click's ClickException.
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


chaos_app = typer.Typer(no_args_is_help=True, help="Failure exercises with a measured timeline.")
app.add_typer(chaos_app, name="chaos")
TimeoutOption = typer.Option(180.0, "--timeout", metavar="S", help="Give up waiting for an event after S seconds.")
ReportOption = typer.Option(None, "--report", metavar="FILE.html", help="Also write a self-contained HTML report.")


def _render_timelines(timelines, as_json: bool, report: Optional[str]) -> None:
    if report:
        Path(report).write_text(chaos.html_report(timelines))
    if as_json:
        data = [t.as_dict() for t in timelines]
        _emit_json(data[0] if len(data) == 1 else data)
    else:
        for t in timelines:
            typer.echo(f"{t.exercise} {t.target} (lab {t.lab})"
                       + (f": leader {t.old_leader} -> {t.new_leader or '?'}, at the end {t.final_leader}"
                          if t.old_leader else ""))
            rows = [(e.event, f"{e.t:.1f}", f"{e.expected[0]:g}-{e.expected[1]:g} s" if e.expected else "",
                     e.detail + (" LATE" if e.expected and e.t > e.expected[1] else "")) for e in t.events]
            rows += [(m, "-", "", "not seen within the timeout") for m in t.missing]
            _table(("EVENT", "SECONDS", "EXPECTED", "DETAIL"), rows, indent=2, right={"SECONDS"})
        if report:
            typer.echo(f"report: {report}")
    if any(t.missing for t in timelines):
        raise typer.Exit(5)


ServiceOption = typer.Option(None, "--service", metavar="NAME",
                             help="Follow only this service's tasks. With no service in the lab, a small drill "
                                  "service of the baked image is created for the run and removed afterwards.")


@chaos_app.command("kill-leader")
def chaos_kill_leader(lab: Optional[str] = LabOption, service: Optional[str] = ServiceOption,
                      restore: bool = typer.Option(False, "--restore", help="Start the node again and time its return."),
                      timeout: float = TimeoutOption, force: bool = typer.Option(False, "--force",
                      help="Kill even when it costs the swarm its quorum."),
                      report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Power off the leader's VM and time the election, the node going Down and its tasks moving.
    Exit 5 when an expected event never came."""
    _enter_host()
    _render_timelines([chaos.kill(ctx.config, lab or ctx.config.lab, None, restore, timeout, force, service,
                                  ctx.progress)], as_json, report)


@chaos_app.command("kill")
def chaos_kill(node: str = NodeArgument, lab: Optional[str] = LabOption, service: Optional[str] = ServiceOption,
               restore: bool = typer.Option(False, "--restore", help="Start the node again and time its return."),
               timeout: float = TimeoutOption, force: bool = typer.Option(False, "--force",
               help="Kill even when it costs the swarm its quorum."),
               report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Power off one node's VM and time what the swarm does."""
    _enter_host()
    _render_timelines([chaos.kill(ctx.config, lab or ctx.config.lab, node, restore, timeout, force, service,
                                  ctx.progress)], as_json, report)


@chaos_app.command("start")
def chaos_start(node: Optional[str] = typer.Argument(None, metavar="NODE"), lab: Optional[str] = LabOption,
                all_nodes: bool = typer.Option(False, "--all", help="Every stopped node of the lab."),
                timeout: float = TimeoutOption, report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Start a stopped node (or --all) and time its return to the swarm. Undoes any chaos run."""
    _enter_host()
    if bool(node) == all_nodes:
        raise configuration.ConfigError("name one NODE or pass --all")
    timelines = chaos.start(ctx.config, lab or ctx.config.lab, None if all_nodes else [node], timeout, ctx.progress)
    if not timelines:
        typer.echo("every node is running; nothing to start")
        return
    _render_timelines(timelines, as_json, report)


@chaos_app.command("drain")
def chaos_drain(node: str = NodeArgument, lab: Optional[str] = LabOption, timeout: float = TimeoutOption,
                report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Set a node's availability to drain and time its tasks moving elsewhere."""
    _enter_host()
    _render_timelines([chaos.availability(ctx.config, lab or ctx.config.lab, node, "drain", timeout, ctx.progress)],
                      as_json, report)


@chaos_app.command("activate")
def chaos_activate(node: str = NodeArgument, lab: Optional[str] = LabOption, timeout: float = TimeoutOption,
                   report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Set a node's availability back to active (tasks may be placed on it again)."""
    _enter_host()
    _render_timelines([chaos.availability(ctx.config, lab or ctx.config.lab, node, "active", timeout, ctx.progress)],
                      as_json, report)


@chaos_app.command("demote-leader")
def chaos_demote_leader(lab: Optional[str] = LabOption, timeout: float = TimeoutOption,
                        report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """The contrast to kill-leader: demote the leader gracefully, time the hand-over, promote it back."""
    _enter_host()
    _render_timelines([chaos.demote_leader(ctx.config, lab or ctx.config.lab, timeout, ctx.progress)], as_json, report)


snapshot_app = typer.Typer(no_args_is_help=True, help="Consistent whole-lab snapshots that `reset` returns to.")
app.add_typer(snapshot_app, name="snapshot")


@snapshot_app.command("save")
def snapshot_save(name: str = typer.Argument(resets.DEFAULT_SNAPSHOT, metavar="[NAME]"),
                  lab: Optional[str] = LabOption,
                  force: bool = typer.Option(False, "--force", help="Save even while a node is down (not consistent)."),
                  as_json: bool = JsonOption):
    """Pause every node, snapshot each (memory and disk), resume all; keep the swarm's baseline."""
    _enter_host()
    record = resets.save_snapshot(ctx.config, lab or ctx.config.lab, name, force, ctx.progress)
    if as_json:
        _emit_json(_snapshot_row(record))
        return
    typer.echo(f"snapshot {record.name} of lab {lab or ctx.config.lab}: {len(record.nodes)} nodes, "
               f"{record.seconds:.1f} s, {record.bytes / 2**20:.0f} MiB")


def _snapshot_row(record) -> dict:
    state = record.state
    return {"name": record.name, "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)),
            "nodes": record.nodes, "seconds": record.seconds, "bytes": record.bytes,
            "leader": state.leader if state else None, "services": sorted(state.services) if state else []}


@snapshot_app.command("ls")
def snapshot_ls(lab: Optional[str] = LabOption, as_json: bool = JsonOption):
    """The lab's snapshots with what their baseline holds."""
    _enter_host()
    rows = [_snapshot_row(r) for r in resets.list_snapshots(ctx.config, lab or ctx.config.lab)]
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        typer.echo(f"lab {lab or ctx.config.lab} has no snapshots; `swarmlab snapshot save` takes one")
        return
    _table(("NAME", "CREATED", "NODES", "LEADER", "SERVICES", "MIB"),
           [(r["name"], r["created"], len(r["nodes"]), r["leader"] or "-", ", ".join(r["services"]) or "-",
             f"{r['bytes'] / 2**20:.0f}") for r in rows], right={"NODES", "MIB"})


@snapshot_app.command("rm")
def snapshot_rm(name: str = typer.Argument(..., metavar="NAME"), lab: Optional[str] = LabOption,
                as_json: bool = JsonOption):
    """Remove a snapshot from every node of the lab."""
    _enter_host()
    removed = resets.remove_snapshot(ctx.config, lab or ctx.config.lab, name)
    if as_json:
        _emit_json({"name": name, "removed_from": removed})
        return
    typer.echo(f"snapshot {name} removed from {', '.join(removed) or 'the journal'}")


@app.command()
def reset(lab: Optional[str] = LabOption,
          all_labs: bool = typer.Option(False, "--all", help="Every lab on this host, in parallel."),
          to: str = typer.Option(resets.DEFAULT_SNAPSHOT, "--to", metavar="NAME", help="Snapshot to return to."),
          level: Optional[str] = typer.Option(None, "--level", metavar="state|snapshot|rebuild",
                                              help="Force a level; default: the cheapest that can work, escalating "
                                                   "when the health gate fails."),
          node: Optional[str] = typer.Option(None, "--node", metavar="NODE", hidden=True),
          timeout: float = typer.Option(120.0, "--timeout", metavar="S", help="Health gate wait per level."),
          as_json: bool = JsonOption):
    """Bring a lab back to a snapshot's state: `state` over SSH (seconds), `snapshot` reverts
    every node together, `rebuild` makes the nodes anew. Exit 1 when the lab is still not
    healthy, naming what is wrong."""
    _enter_host()
    if level is not None and level not in ("state", "snapshot", "rebuild"):
        raise configuration.ConfigError(f"--level {level} is not one of state, snapshot, rebuild")
    if node is not None:
        raise Refused(f"reverting {node} alone is refused: a manager reverted on its own comes back with an old "
                      "raft log and never rejoins (Docker's admin guide says the same of restoring one manager); "
                      "`swarmlab reset` reverts the whole lab together")
    if all_labs and lab:
        raise configuration.ConfigError("give --lab or --all, not both")
    if all_labs:
        names = [row["lab"] for row in labs.list_labs(ctx.config)]
        results = resets.reset_all(ctx.config, names, to, level, timeout,
                                   lambda name, message: ctx.progress(f"{name}: {message}"))
    else:
        results = [resets.reset(ctx.config, lab or ctx.config.lab, to, level, timeout, ctx.progress)]
    if as_json:
        data = [{**asdict(r), "ok": r.ok} for r in results]
        _emit_json(data if all_labs else data[0])
    else:
        for r in results:
            for line in r.done:
                typer.echo(f"{r.lab}: + {line}")
        _table(("LAB", "LEVEL", "WHY", "SECONDS", "RESULT"),
               [(r.lab, " -> ".join(r.levels) or "-", r.reasons[0] if r.reasons else "-", f"{r.seconds:.1f}",
                 "healthy" if r.ok else (r.error or "; ".join(r.problems))) for r in results], right={"SECONDS"})
    if not all(r.ok for r in results):
        raise typer.Exit(1)

exercise_app = typer.Typer(no_args_is_help=True, help="The article's exercises (labs/): set up, check, hint, solve.")
app.add_typer(exercise_app, name="exercise")
ExerciseArgument = typer.Argument(..., metavar="ID", help="Exercise id (`swarmlab exercise ls`).")
ImageOption = typer.Option([], "--image", metavar="NAME=REF",
                           help="Use another image for a parameter, e.g. whoami=traefik/whoami (remembered per lab).")


@exercise_app.command("ls")
def exercise_ls(as_json: bool = JsonOption):
    """The exercises in labs/, in teaching order."""
    found = exercises.load_all()
    if as_json:
        _emit_json([e.summary() for e in found])
        return
    _table(("ID", "NODES", "CHECKS", "HINTS", "TITLE"),
           [(e.id, e.requires["nodes"], len(e.checks), len(e.hints), e.title) for e in found], right={"NODES", "CHECKS", "HINTS"})


@exercise_app.command("show")
def exercise_show(exercise_id: str = ExerciseArgument, lab: Optional[str] = LabOption,
                  images: list[str] = ImageOption,
                  notes: bool = typer.Option(False, "--notes", help="Also show the article's errors this exercise corrects "
                                                                     "(for the instructor).")):
    """The student text (never the solution), with this lab's node names and addresses when
    the lab exists."""
    exercise = exercises.find(exercise_id)
    chosen = exercises.parse_image_overrides(images)
    name = lab or ctx.config.lab
    lab_model = labs.load_journal(ctx.config, name)
    if lab_model is not None:
        chosen = {**exercises.load_state(ctx.config, name).get("images", {}), **chosen}
    context = exercises.context(exercise, lab_model, chosen)
    typer.echo(exercises.student_text(exercise, context).rstrip())
    if notes and exercise.corrections:
        typer.echo("\nCorrected from the article:")
        for line in exercise.corrections:
            typer.echo(f"- {exercises.render(line, context, exercise.id)}")


@exercise_app.command("start")
def exercise_start(exercise_id: str = ExerciseArgument, lab: Optional[str] = LabOption,
                   images: list[str] = ImageOption, as_json: bool = JsonOption):
    """Put the lab at the exercise's starting point: reset to the `formed` snapshot (the
    cheapest level that works), then the exercise's setup. The previous exercise's leftovers
    are gone."""
    exercise = exercises.find(exercise_id)
    chosen = exercises.parse_image_overrides(images)
    _enter_host()
    result = exercises.start(ctx.config, lab or ctx.config.lab, exercise, chosen, ctx.progress)
    if as_json:
        _emit_json(result)
    else:
        typer.echo(f"lab {result['lab']} is ready for exercise {exercise.id} "
                   f"(reset: {' -> '.join(result['reset']['levels'])}, {result['reset']['seconds']:.1f} s); "
                   f"`swarmlab exercise show {exercise.id}` prints the task")


@exercise_app.command("check")
def exercise_check(exercise_id: str = ExerciseArgument, lab: Optional[str] = LabOption,
                   no_wait: bool = typer.Option(False, "--no-wait", help="One pass: do not retry failing checks."),
                   junit: Optional[str] = typer.Option(None, "--junit", metavar="FILE", help="Also write a JUnit XML report."),
                   as_json: bool = JsonOption):
    """Check the lab's end state: ✓/✗ per check with what was expected and found. Failing
    checks are retried up to their timeout, since Swarm converges over time. Exit 0 only when
    every check passes, 1 otherwise."""
    exercise = exercises.find(exercise_id)
    _enter_host()
    name = lab or ctx.config.lab
    began = time.monotonic()
    verdicts = exercises.check(ctx.config, name, exercise, wait=not no_wait, progress=ctx.progress)
    if junit:
        with open(junit, "w") as f:
            f.write(exercises.junit(exercise, name, verdicts, time.monotonic() - began))
    passed = sum(v.ok for v in verdicts)
    if as_json:
        _emit_json({"lab": name, "exercise": exercise.id, "passed": passed, "of": len(verdicts),
                    "checks": [v.as_dict() for v in verdicts]})
    else:
        for v in verdicts:
            typer.echo(f"{'✓' if v.ok else '✗'} {v.title}: " + (v.expected if v.ok else f"expected {v.expected}; found {v.found}"))
        typer.echo(f"{passed}/{len(verdicts)} checks pass")
    if passed != len(verdicts):
        raise typer.Exit(1)


@exercise_app.command("hint")
def exercise_hint(exercise_id: str = ExerciseArgument, lab: Optional[str] = LabOption, as_json: bool = JsonOption):
    """The next hint; the lab remembers how many it has seen (`exercise start` resets that)."""
    exercise = exercises.find(exercise_id)
    result = exercises.hint(ctx.config, lab or ctx.config.lab, exercise)
    if as_json:
        _emit_json(result)
    elif result["hint"] is None:
        typer.echo(f"exercise {exercise.id} has no hints")
    else:
        typer.echo(f"hint {result['number']}/{result['of']}: {result['hint']}")


@exercise_app.command("solve")
def exercise_solve(exercise_id: str = ExerciseArgument, lab: Optional[str] = LabOption):
    """Run the reference solution on the lab, showing each command and the node it runs on."""
    exercise = exercises.find(exercise_id)
    _enter_host()
    exercises.solve(ctx.config, lab or ctx.config.lab, exercise, lambda m: typer.echo(m))
    typer.echo(f"solution done: `swarmlab exercise check {exercise.id}` verifies it")


@exercise_app.command("test")
def exercise_test(exercise_id: Optional[str] = typer.Argument(None, metavar="[ID]"),
                  all_exercises: bool = typer.Option(False, "--all", help="Every exercise, in teaching order."),
                  lab: Optional[str] = LabOption, as_json: bool = JsonOption):
    """The exercise tests itself on a lab: start, check (which must fail), solve, check (which
    must pass). Exit 0 only when every exercise passes."""
    if bool(exercise_id) == all_exercises:
        raise configuration.ConfigError("give an exercise ID or --all")
    chosen = exercises.load_all() if all_exercises else [exercises.find(exercise_id)]
    _enter_host()
    name = lab or ctx.config.lab
    results = []
    for exercise in chosen:
        result = exercises.self_test(ctx.config, name, exercise, ctx.progress)
        results.append(result)
        if not as_json:
            typer.echo(f"{'✓' if result.ok else '✗'} {exercise.id} ({result.seconds:.1f} s)"
                       + ("" if result.ok else f": {result.error}"))
    if as_json:
        _emit_json([r.as_dict() for r in results])
    else:
        typer.echo(f"{sum(r.ok for r in results)}/{len(results)} exercises pass in "
                   f"{sum(r.seconds for r in results):.1f} s")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


class_app = typer.Typer(no_args_is_help=True, help="A class: one lab per student, spread over the lab hosts.")
app.add_typer(class_app, name="class")


def _render_lab_results(results: list, as_json: bool, what: str) -> None:
    if as_json:
        _emit_json([asdict(r) for r in results])
    else:
        _table(("STUDENT", "LAB", "HOST", "SECONDS", "RESULT"),
               [(r.student, r.lab, r.host, f"{r.seconds:.1f}", "ok" if r.ok else r.error or "failed")
                for r in results], right={"SECONDS"})
        typer.echo(f"{sum(r.ok for r in results)}/{len(results)} labs {what}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@class_app.command("up")
def class_up(students: Optional[int] = typer.Option(None, "--students", metavar="N", help="Labs s01 ... sN."),
             roster: Optional[str] = typer.Option(None, "--roster", metavar="FILE",
                                                  help="One student per line; lab names are their slugs."),
             nodes: int = typer.Option(3, "--nodes", metavar="N", help="Nodes per lab."),
             no_snapshot: bool = typer.Option(False, "--no-snapshot", help="Do not save each lab's `formed` snapshot."),
             as_json: bool = JsonOption):
    """Make one lab per student, each whole on the host with the most room, on a network of its
    own, several at once per host ([class] parallel). Refuses before making anything when the
    hosts are short of room. A failed lab does not stop the others; rerunning converges. Exit 1
    when any lab failed."""
    if (students is None) == (roster is None):
        raise configuration.ConfigError("give --students N or --roster FILE")
    labs.check_count(ctx.config, nodes)
    if roster is not None:
        try:
            text = open(roster, encoding="utf-8").read()
        except OSError as e:
            raise configuration.ConfigError(f"--roster {roster}: cannot read: {e.strerror}") from None
        wanted = classroom.students_from_roster(text, roster)
    else:
        wanted = classroom.students_from_count(students)
    _enter_host()
    with NodeBoard() as board:
        results = classroom.class_up(ctx.config, wanted, nodes, board, not no_snapshot)
    _render_lab_results(results, as_json, "ready")


@class_app.command("status")
def class_status(as_json: bool = JsonOption,
                 html: Optional[str] = typer.Option(None, "--html", metavar="FILE",
                                                    help="Also write a page for the projector; it reloads itself."),
                 watch: Optional[float] = typer.Option(None, "--watch", metavar="S",
                                                       help="Read and write again every S seconds, until Ctrl-C.")):
    """One row per student: host, nodes ready, swarm health, current exercise and its last check."""
    _enter_host()
    while True:
        rows = classroom.class_status(ctx.config)
        if html:
            from .render import render
            page = render("class-status.html.j2", rows=rows, refresh=int(watch or 10),
                          at=time.strftime("%H:%M:%S"))
            tmp = f"{html}.tmp"
            with open(tmp, "w") as f:
                f.write(page)
            os.replace(tmp, html)
        if as_json:
            _emit_json(rows)
        else:
            def check(row):
                last = row.get("last_check")
                return f"{last['exercise']} {last['passed']}/{last['of']}" if last else "-"
            _table(("STUDENT", "LAB", "HOST", "READY", "SWARM", "EXERCISE", "LAST CHECK"),
                   [(r["student"], r["lab"], r["host"], f"{r['ready']}/{r['nodes']}",
                     r["swarm"] if "error" not in r else r["error"], r.get("exercise") or "-", check(r))
                    for r in rows])
        if not watch:
            break
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return  # the normal end of --watch
    if not all(r["swarm"] == "healthy" and r["ready"] == r["nodes"] for r in rows):
        raise typer.Exit(1)


@app.command("portal")
def portal(listen: Optional[str] = typer.Option(None, "--listen", metavar="ADDR",
                                                help="Address to listen on, on this machine's own network even "
                                                     "when the lab host is isolated (default: [portal] listen)."),
           address: Optional[str] = typer.Option(None, "--address", metavar="ADDR",
                                                 help="The name or address students reach this machine at, as the "
                                                      "cards say (default: [portal] address)."),
           port: Optional[int] = typer.Option(None, "--port", metavar="PORT",
                                              help="HTTPS port (default: [portal] https_port)."),
           ssh_port: Optional[int] = typer.Option(None, "--ssh-port", metavar="PORT",
                                                  help="The students' SSH gateway port (default: [portal] ssh_port)."),
           cert: Optional[str] = typer.Option(None, "--cert", metavar="FILE",
                                              help="TLS certificate (PEM); default: a self-signed one, made once."),
           key: Optional[str] = typer.Option(None, "--key", metavar="FILE", help="The certificate's private key."),
           new_instructor_token: bool = typer.Option(False, "--new-instructor-token",
                                                     help="Replace the instructor's token first; the old one "
                                                          "stops working.")):
    """Let the class in: a page per student (the exercise, a terminal on each node, Check and
    Hint) and one for the instructor, over HTTPS; and the SSH gateway, through which each
    student reaches their own lab's nodes only. Runs until Ctrl-C. `class cards` then says
    where it listens, with the certificate's fingerprint."""
    from . import access, portal_endpoint, portal_server
    if (cert is None) != (key is None):
        raise configuration.ConfigError("give --cert and --key together, or neither for a self-signed certificate")
    config = ctx.config
    host, https_port = listen or config.portal_listen, port or config.portal_port
    gateway_port = ssh_port or config.gateway_port
    if https_port == gateway_port:
        raise configuration.ConfigError(f"the HTTPS port and the SSH port are both {https_port}: give another "
                                        "--port or --ssh-port")
    told = address or config.student_address
    # bound here, before entering the lab host's namespace: students reach this machine, not the namespace
    web_sock = portal_server.listen_socket(host, https_port)
    ssh_sock = portal_server.listen_socket(host, gateway_port)
    _enter_host()
    if cert is None:
        cert, key = map(str, portal_endpoint.self_signed_certificate(config, told))
    tls = portal_server.tls_context(cert, key)
    if new_instructor_token:
        access.new_instructor_token(config)
        ctx.progress("made a new instructor token; the old one no longer works")
    endpoint = portal_endpoint.Endpoint(told, https_port, gateway_port, portal_endpoint.fingerprint(Path(cert)),
                                        host)
    portal_server.serve(config, web_sock, ssh_sock, tls, endpoint, ctx.progress)


@class_app.command("cards")
def class_cards(as_json: bool = JsonOption,
                out: Optional[str] = typer.Option(None, "--out", metavar="DIR",
                                                  help="Also write each student's folder swarmlab-LAB here: key, "
                                                       "ssh_config, known_hosts, to hand out."),
                html: Optional[str] = typer.Option(None, "--html", metavar="FILE", help="Also write printable cards.")):
    """One card per student: lab, nodes, and how to reach them (SSH through the gateway that
    `swarmlab portal` runs). The private keys go only into --out folders, never to the screen."""
    _enter_host()
    rows = classroom.cards(ctx.config)
    if rows and not rows[0]["portal_running"]:
        ctx.progress("no portal runs now: these cards say where `swarmlab portal` would listen by the config; "
                     "start it, then make the cards again")
    if out:
        for folder in classroom.write_card_folders(ctx.config, Path(out)):
            ctx.progress(f"wrote {folder}")
    if html:
        from .render import render
        from .keys import write_private
        write_private(Path(html), render("class-cards.html.j2", cards=rows))  # every student's token
    if as_json:
        _emit_json(rows)
        return
    for card in rows:
        typer.echo(f"── {card['student']} · lab {card['lab']} (host {card['host']})")
        typer.echo("   nodes: " + ", ".join(f"{n['node']} {n['ip']}" for n in card["nodes"]))
        typer.echo(f"   with your folder {card['folder']}: {card['ssh']}  (user {card['user']}, "
                   f"through {card['gateway']})")
        typer.echo(f"   in a browser: {card['portal']}")
        if card["fingerprint"]:
            typer.echo(f"   the page's certificate: SHA-256 {card['fingerprint']}")


@class_app.command("start")
def class_start(exercise_id: str = ExerciseArgument, as_json: bool = JsonOption):
    """Start an exercise for everyone: every lab reset to its formed swarm, then the exercise's
    setup, all at once. Exit 1 when any lab could not start it."""
    exercise = exercises.find(exercise_id)
    _enter_host()
    with NodeBoard() as board:
        results = classroom.class_start(ctx.config, exercise, board)
    _render_lab_results(results, as_json, f"started {exercise.id}")


@class_app.command("check")
def class_check(exercise_id: str = ExerciseArgument,
                wait: bool = typer.Option(False, "--wait", help="Retry failing checks up to their timeout."),
                junit: Optional[str] = typer.Option(None, "--junit", metavar="FILE",
                                                    help="Also write JUnit XML: one suite per student."),
                as_json: bool = JsonOption):
    """Check every student's lab at once: one row per student with the checks that pass. Exit 0
    only when every lab passes every check."""
    exercise = exercises.find(exercise_id)
    _enter_host()
    results = classroom.class_check(ctx.config, exercise, wait)
    if junit:
        with open(junit, "w") as f:
            f.write(classroom.junit(exercise.id, results))
    if as_json:
        _emit_json([asdict(r) for r in results])
    else:
        def failing(r) -> str:
            bad = [v["check"] for v in r.detail.get("verdicts", []) if not v["ok"]]
            return r.error or ("✗ " + "; ".join(bad) if bad else "✓")
        _table(("STUDENT", "LAB", "HOST", "PASSED", "RESULT"),
               [(r.student, r.lab, r.host, f"{sum(v['ok'] for v in r.detail.get('verdicts', []))}/"
                 f"{len(r.detail.get('verdicts', []))}", failing(r)) for r in results])
        typer.echo(f"{sum(r.ok for r in results)}/{len(results)} labs pass {exercise.id}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@class_app.command("reset")
def class_reset(level: Optional[str] = typer.Option(None, "--level", metavar="state|snapshot|rebuild",
                                                    help="Force a level; default: the cheapest that works per lab."),
                as_json: bool = JsonOption):
    """Reset every student's lab to its `formed` snapshot, all at once. Exit 1 when any lab is
    not healthy afterwards."""
    if level is not None and level not in ("state", "snapshot", "rebuild"):
        raise configuration.ConfigError(f"--level {level} is not one of state, snapshot, rebuild")
    _enter_host()
    with NodeBoard() as board:
        results = classroom.class_reset(ctx.config, level, progress=board)
    _render_lab_results(results, as_json, "reset")


@class_app.command("down")
def class_down(yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."), as_json: bool = JsonOption):
    """Remove every student's lab (domains, volumes, its network, DNS records) on every host."""
    _enter_host()
    room = classroom.load(ctx.config)
    if room is None:
        if as_json:
            _emit_json([])
        else:
            typer.echo("there is no class; nothing to remove")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise configuration.ConfigError(f"`class down` removes the labs of {len(room.students)} students: "
                                            "pass --yes to confirm")
        typer.confirm(f"remove the labs of all {len(room.students)} students?", abort=True)
    _render_lab_results(classroom.class_down(ctx.config), as_json, "removed")


def main() -> None:
    try:
        code = app(prog_name="swarmlab", standalone_mode=False)
    except typer.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort) or a "no" at a prompt
        typer.echo("swarmlab: interrupted; rerun the command to finish it, or undo it with `down`", err=True)
        sys.exit(130)
    except ClickException as e:  # usage errors: click's own short message, exit 2
        e.show()
        sys.exit(e.exit_code)
    except SwarmlabError as e:
        typer.echo(f"swarmlab: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("swarmlab: interrupted; rerun the command to finish it, or undo it with `down`", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
