"""The `swarmlab` command: parse, call the orchestration, render. No logic of its own."""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

import libvirt
import typer

from . import __version__, config as configuration, labhost
from .errors import SwarmlabError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Docker Swarm training labs on a libvirt host.")
host_app = typer.Typer(no_args_is_help=True, help="The embedded lab host: libvirtd, lab network, PowerDNS.")
template_app = typer.Typer(no_args_is_help=True, help="The Debian 12 template VM that nodes are cloned from.")
app.add_typer(host_app, name="host")
app.add_typer(template_app, name="template")

JsonOption = typer.Option(False, "--json", help="Print a JSON document on stdout instead of text.")


class Context:
    config: configuration.Config
    started = time.monotonic()

    def progress(self, message: str) -> None:
        typer.echo(f"[{time.monotonic() - self.started:6.1f}s] {message}", err=True)


ctx = Context()


def _emit_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.callback()
def _main(config: Optional[str] = typer.Option(None, "--config", "-c", metavar="FILE",
                                               help="swarmlab.toml to use (else $SWARMLAB_CONFIG, ./swarmlab.toml, "
                                                    "/etc/swarmlab/swarmlab.toml, built-in defaults)."),
          version: bool = typer.Option(False, "--version", help="Print the version and exit.")):
    if version:
        typer.echo(__version__)
        raise typer.Exit()
    ctx.config = configuration.load(config)


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
                   as_json: bool = JsonOption):
    """Build the Debian 12 template image (cached by recipe) and define it as a shut-off domain."""
    # No _enter_host(): debootstrap needs the Debian mirror, which the lab namespace cannot reach,
    # and libvirt's socket is reachable from anywhere.
    result = labhost.template_build(ctx.config, name or ctx.config.template, not no_engine, ctx.progress)
    if as_json:
        _emit_json(result)
        return
    how = "built" if result["built"] else "found in the cache"
    typer.echo(f"template {result['name']}: recipe {result['recipe']} {how}, "
               f"{'defined' if result['defined'] else 'already defined'} ({result['domain_type']}), "
               f"disk {result['disk_bytes'] / 2**20:.0f} MiB, {result['seconds']:.1f} s")


@app.command()
def doctor(as_json: bool = JsonOption):
    """Check libvirt, the lab network, the template, PowerDNS and the SSH key. Exit 1 if any fails."""
    _enter_host()
    checks = labhost.doctor(ctx.config)
    if as_json:
        _emit_json({"ok": all(c["ok"] for c in checks), "checks": checks})
    else:
        for c in checks:
            line = f"{'✓' if c['ok'] else '✗'} {c['check']:<9} {c['detail']}"
            typer.echo(line + (f"\n  fix: {c['fix']}" if c["fix"] else ""))
    if not all(c["ok"] for c in checks):
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


def main() -> None:
    try:
        app()
    except SwarmlabError as e:
        typer.echo(f"swarmlab: {e}", err=True)
        sys.exit(e.exit_code)
    except libvirt.libvirtError as e:
        typer.echo(f"swarmlab: libvirt: {e.get_error_message()}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("swarmlab: interrupted; rerun the command to finish, or undo with `down`", err=True)
        sys.exit(130)
