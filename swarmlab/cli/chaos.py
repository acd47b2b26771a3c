"""`chaos`: failure exercises with a measured timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swarmlab import config as configuration
from swarmlab.cli.classroom import class_app
from swarmlab.cli.common import JsonOption, LabOption, NodeArgument, app, ctx, emit_json, enter_host, table
from swarmlab.cli.deferred import deferred

timeline = deferred("swarmlab.core.timeline")
untrusted = deferred("swarmlab.core.untrusted")
chaos = deferred("swarmlab.lab.chaos")
partition = deferred("swarmlab.lab.partition")
quorum_drills = deferred("swarmlab.lab.quorum_drills")
class_drills = deferred("swarmlab.classroom.class_chaos")

chaos_app = typer.Typer(no_args_is_help=True, help="Failure exercises with a measured timeline.")
app.add_typer(chaos_app, name="chaos")
TimeoutOption = typer.Option(180.0, "--timeout", metavar="S", help="Give up waiting for an event after S seconds.")
ReportOption = typer.Option(None, "--report", metavar="FILE.html", help="Also write a self-contained HTML report.")


def _render_timelines(timelines, as_json: bool, report: Optional[str], quiet: bool = False) -> None:
    if report:
        Path(report).write_text(timeline.html_report(timelines))
    if as_json:
        data = [t.as_dict() for t in timelines]
        emit_json(data[0] if len(data) == 1 else data)
    elif not quiet:
        for t in timelines:
            typer.echo(f"{t.exercise} {t.target} (lab {t.lab})"
                       + (f": leader {t.old_leader} -> {t.new_leader or '?'}, at the end {t.final_leader or 'none'}"
                          if t.old_leader else ""))
            rows = [(e.event, f"{e.t:.1f}", f"{e.expected[0]:g}-{e.expected[1]:g} s" if e.expected else "",
                     untrusted.printable(e.detail)  # a node's own words, where a student is root
                     + (" LATE" if e.expected and e.t > e.expected[1] else "")) for e in t.events]
            rows += [(m, "-", "", "not seen within the timeout") for m in t.missing]
            table(("EVENT", "SECONDS", "EXPECTED", "DETAIL"), rows, indent=2, right={"SECONDS"})
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
    enter_host()
    _render_timelines([chaos.kill(ctx.config, lab or ctx.config.lab, None, restore, timeout, force, service,
                                  ctx.progress)], as_json, report)


@chaos_app.command("kill")
def chaos_kill(node: str = NodeArgument, lab: Optional[str] = LabOption, service: Optional[str] = ServiceOption,
               restore: bool = typer.Option(False, "--restore", help="Start the node again and time its return."),
               timeout: float = TimeoutOption, force: bool = typer.Option(False, "--force",
               help="Kill even when it costs the swarm its quorum."),
               report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Power off one node's VM and time what the swarm does."""
    enter_host()
    _render_timelines([chaos.kill(ctx.config, lab or ctx.config.lab, node, restore, timeout, force, service,
                                  ctx.progress)], as_json, report)


@chaos_app.command("start")
def chaos_start(node: Optional[str] = typer.Argument(None, metavar="NODE"), lab: Optional[str] = LabOption,
                all_nodes: bool = typer.Option(False, "--all", help="Every stopped node of the lab."),
                timeout: float = TimeoutOption, report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Start a stopped node (or --all) and time its return to the swarm. Undoes any chaos run."""
    enter_host()
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
    enter_host()
    _render_timelines([chaos.availability(ctx.config, lab or ctx.config.lab, node, "drain", timeout, ctx.progress)],
                      as_json, report)


@chaos_app.command("activate")
def chaos_activate(node: str = NodeArgument, lab: Optional[str] = LabOption, timeout: float = TimeoutOption,
                   report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Set a node's availability back to active (tasks may be placed on it again)."""
    enter_host()
    _render_timelines([chaos.availability(ctx.config, lab or ctx.config.lab, node, "active", timeout, ctx.progress)],
                      as_json, report)


@chaos_app.command("demote-leader")
def chaos_demote_leader(lab: Optional[str] = LabOption, timeout: float = TimeoutOption,
                        report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """The contrast to kill-leader: demote the leader gracefully, time the hand-over, promote it back."""
    enter_host()
    _render_timelines([chaos.demote_leader(ctx.config, lab or ctx.config.lab, timeout, ctx.progress)], as_json, report)


@chaos_app.command("partition")
def chaos_partition(nodes: list[str] = typer.Argument(..., metavar="NODE", help="Nodes to cut off, e.g. swr2 swr3."),
                    lab: Optional[str] = LabOption,
                    force: bool = typer.Option(False, "--force", help="Cut even when it costs the swarm its majority."),
                    as_json: bool = JsonOption):
    """Cut nodes off the lab network, as pulling their cables would: the hypervisor sets their
    link down, so nothing inside the guest can undo it. `chaos heal` (or `reset`) ends it."""
    enter_host()
    cut = partition.partition(ctx.config, lab or ctx.config.lab, nodes, force, ctx.progress)
    if as_json:
        emit_json({"cut": cut})
    else:
        typer.echo(f"cut off: {', '.join(cut)}" if cut else "those nodes were cut off already")


@chaos_app.command("heal")
def chaos_heal(nodes: Optional[list[str]] = typer.Argument(None, metavar="NODE", help="Nodes to heal, e.g. swr2."),
               lab: Optional[str] = LabOption,
               all_nodes: bool = typer.Option(False, "--all", help="Every cut node of the lab."),
               as_json: bool = JsonOption):
    """Put cut nodes back on the lab network: links up, split halves joined."""
    if bool(nodes) == all_nodes:
        raise configuration.ConfigError("name the NODEs to heal or pass --all")
    enter_host()
    healed = partition.heal(ctx.config, lab or ctx.config.lab, None if all_nodes else nodes, ctx.progress)
    if as_json:
        emit_json({"healed": healed})
    else:
        typer.echo(f"healed: {', '.join(healed)}" if healed else "no link was cut; nothing to heal")


@chaos_app.command("lose-quorum")
def chaos_lose_quorum(lab: Optional[str] = LabOption,
                      restore: bool = typer.Option(False, "--restore", help="Heal the links afterwards and time the "
                                                                            "leader and managers coming back."),
                      timeout: float = TimeoutOption, report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Cut a majority of the managers off the lab network (never the leader) and time the leader
    stepping down, a write refused and the tasks going on running. Without --restore the swarm
    is left without a majority for a student to recover (as the `quorum` exercise starts);
    `chaos heal --all` or `reset` ends it.
    Exit 5 when an expected event never came."""
    enter_host()
    _render_timelines([quorum_drills.lose_quorum(ctx.config, lab or ctx.config.lab, restore, timeout, ctx.progress)],
                      as_json, report)


@chaos_app.command("split")
def chaos_split(lab: Optional[str] = LabOption,
                restore: bool = typer.Option(False, "--restore", help="Join the halves afterwards and time the leader "
                                                                      "and managers coming back."),
                timeout: float = TimeoutOption, report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Split a lab of an even number of managers (4 or more) into two halves with as many
    managers each: the hypervisor plugs one half into a network of its own. Times the leader's
    half losing its leader, the other half saying it has none, a write refused and the tasks
    going on running: an even number of managers buys nothing. Needs `up 4 --managers 4` (or
    `swarm form --managers 4`). Without --restore the halves stay apart; `chaos heal --all` or
    `reset` joins them. Exit 5 when an expected event never came."""
    enter_host()
    _render_timelines([quorum_drills.split(ctx.config, lab or ctx.config.lab, restore, timeout, ctx.progress)],
                      as_json, report)


@class_app.command("chaos")
def class_chaos(drill: str = typer.Argument(..., metavar="DRILL", help="lose-quorum, split or kill-leader."),
                restore: bool = typer.Option(False, "--restore", help="Heal or restart afterwards and time the return."),
                only: Optional[list[str]] = typer.Option(None, "--lab", metavar="LAB",
                                                         help="Only this student's lab (repeat for more)."),
                timeout: float = TimeoutOption, report: Optional[str] = ReportOption, as_json: bool = JsonOption):
    """Run one drill on every student's lab at the same time, a timeline each (`--report` puts
    them on one page to project). Exit 1 when a lab's drill failed, 5 when an expected event
    never came."""
    enter_host()
    results, timelines = class_drills.class_chaos(ctx.config, drill, restore, timeout, only or None,
                                            lambda lab, message: ctx.progress(f"{lab}: {message}"))
    for r in results:
        if not r.ok:
            typer.echo(f"{r.student} (lab {r.lab}): {r.error}", err=True)
    if as_json:  # a list whatever the class's size
        emit_json([t.as_dict() for t in timelines])
    try:
        _render_timelines(timelines, False, report, quiet=as_json)
    except typer.Exit:
        if all(r.ok for r in results):
            raise
    if not all(r.ok for r in results):
        raise typer.Exit(1)
