"""`snapshot` and `reset`: whole-lab snapshots and the way back to them."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Optional

import typer

from swarmlab import config as configuration
from swarmlab.cli.common import LAB_FINISH, JsonOption, LabOption, app, ctx, emit_json, enter_host, table
from swarmlab.cli.deferred import deferred
from swarmlab.config_values import DEFAULT_SNAPSHOT

labs = deferred("swarmlab.lab.model")
resets = deferred("swarmlab.lab.reset")
snapshots = deferred("swarmlab.lab.snapshots")

snapshot_app = typer.Typer(no_args_is_help=True, help="Consistent whole-lab snapshots that `reset` returns to.")
app.add_typer(snapshot_app, name="snapshot")


@snapshot_app.command("save")
def snapshot_save(name: str = typer.Argument(DEFAULT_SNAPSHOT, metavar="[NAME]"),
                  lab: Optional[str] = LabOption,
                  force: bool = typer.Option(False, "--force", help="Save even while a node is down (not consistent)."),
                  as_json: bool = JsonOption):
    """Pause every node, snapshot each (memory and disk), resume all; keep the swarm's baseline."""
    enter_host()
    record = snapshots.save_snapshot(ctx.config, lab or ctx.config.lab, name, force, ctx.progress)
    if as_json:
        emit_json(_snapshot_row(record))
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
    enter_host()
    rows = [_snapshot_row(r) for r in snapshots.list_snapshots(ctx.config, lab or ctx.config.lab)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo(f"lab {lab or ctx.config.lab} has no snapshots; `swarmlab snapshot save` takes one")
        return
    table(("NAME", "CREATED", "NODES", "LEADER", "SERVICES", "MIB"),
          [(r["name"], r["created"], len(r["nodes"]), r["leader"] or "-", ", ".join(r["services"]) or "-",
             f"{r['bytes'] / 2**20:.0f}") for r in rows], right={"NODES", "MIB"})


@snapshot_app.command("rm")
def snapshot_rm(name: str = typer.Argument(..., metavar="NAME"), lab: Optional[str] = LabOption,
                as_json: bool = JsonOption):
    """Remove a snapshot from every node of the lab."""
    enter_host()
    removed = snapshots.remove_snapshot(ctx.config, lab or ctx.config.lab, name)
    if as_json:
        emit_json({"name": name, "removed_from": removed})
        return
    typer.echo(f"snapshot {name} removed from {', '.join(removed) or 'the journal'}")


@app.command()
def reset(lab: Optional[str] = LabOption,
          all_labs: bool = typer.Option(False, "--all", help="Every lab on this host, in parallel."),
          to: str = typer.Option(DEFAULT_SNAPSHOT, "--to", metavar="NAME", help="Snapshot to return to."),
          level: Optional[str] = typer.Option(None, "--level", metavar="state|snapshot|rebuild",
                                              help="Force a level; default: the cheapest that can work, escalating "
                                                   "when the health gate fails."),
          timeout: float = typer.Option(120.0, "--timeout", metavar="S", help="Health gate wait per level."),
          as_json: bool = JsonOption):
    """Bring a lab back to a snapshot's state: `state` over SSH (seconds), `snapshot` reverts
    every node together, `rebuild` makes the nodes anew. Exit 1 when the lab is still not
    healthy, naming what is wrong."""
    enter_host()
    if level is not None and level not in ("state", "snapshot", "rebuild"):
        raise configuration.ConfigError(f"--level {level} is not one of state, snapshot, rebuild")
    if all_labs and lab:
        raise configuration.ConfigError("give --lab or --all, not both")
    if all_labs:
        names = [row["lab"] for row in labs.list_labs(ctx.config)]
        results = resets.reset_all(ctx.config, names, to, level, timeout,
                                   lambda name, message: ctx.progress(f"{name}: {message}"), LAB_FINISH)
    else:
        results = [resets.reset(ctx.config, lab or ctx.config.lab, to, level, timeout, ctx.progress, LAB_FINISH)]
    if as_json:
        data = [{**asdict(r), "ok": r.ok} for r in results]
        emit_json(data if all_labs else data[0])
    else:
        for r in results:
            for line in r.done:
                typer.echo(f"{r.lab}: + {line}")
            if r.timings:  # where the seconds went, e.g. "snapshot 3.1 s, gate 4.0 s (clocks 1.2 s, swarm 3.9 s)"
                parts = {k.removesuffix("_s"): v for k, v in r.timings.items()}
                inner = [f"{k} {parts.pop(k):.1f} s" for k in ("clocks", "swarm") if k in parts]
                typer.echo(f"{r.lab}: took " + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items())
                           + (f" ({', '.join(inner)})" if inner else ""))
        table(("LAB", "LEVEL", "WHY", "SECONDS", "RESULT"),
              [(r.lab, " -> ".join(r.levels) or "-", r.reasons[0] if r.reasons else "-", f"{r.seconds:.1f}",
                 "healthy" if r.ok else (r.error or "; ".join(r.problems))) for r in results], right={"SECONDS"})
    if not all(r.ok for r in results):
        raise typer.Exit(1)
