"""`class` and `portal`: one lab per student, and the way students come in."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from swarmlab import config as configuration
from swarmlab.cli.common import (ExerciseArgument, JsonOption, NodeBoard, app, ctx, emit_json, enter_host,
                                 render_lab_results, table)
from swarmlab.core import class_clock, roster as rosters
from swarmlab.errors import NotFound, Refused
from swarmlab.cli.deferred import deferred

cards = deferred("swarmlab.classroom.cards")
class_exercises = deferred("swarmlab.classroom.class_exercises")
classroom = deferred("swarmlab.classroom.room")
labs = deferred("swarmlab.lab.model")
exercise_files = deferred("swarmlab.teach.exercise_files")

class_app = typer.Typer(no_args_is_help=True, help="A class: one lab per student, spread over the lab hosts.")
app.add_typer(class_app, name="class")


@class_app.command("up")
def class_up(students: Optional[int] = typer.Option(None, "--students", metavar="N", help="Labs s01 ... sN."),
             roster: Optional[str] = typer.Option(None, "--roster", metavar="FILE",
                                                  help="One student per line; lab names are their slugs."),
             nodes: int = typer.Option(3, "--nodes", metavar="N", help="Nodes per lab."),
             no_snapshot: bool = typer.Option(False, "--no-snapshot", help="Do not save each lab's `formed` snapshot."),
             ends: Optional[str] = typer.Option(None, "--ends", metavar="HH:MM",
                                                help="When the class ends, today (default: [class] ends): student "
                                                     "pages count down; at the end their terminals close and "
                                                     "Check still works. `class extend` moves it."),
             language: Optional[str] = typer.Option(None, "--lang", metavar="en|ru",
                                                    help="The language of the exercises, the student pages and "
                                                         "the cards (default: [class] language)."),
             teardown: bool = typer.Option(False, "--teardown",
                                           help="At the end, grade the current exercise in every lab and remove "
                                                "the labs (the portal does it; it must be running)."),
             as_json: bool = JsonOption):
    """Make one lab per student, each whole on the host with the most room, on a network of its
    own, several at once per host ([class] parallel). Refuses before making anything when the
    hosts are short of room. A failed lab does not stop the others; rerunning converges. On labs
    that exist (after a restart of this machine, say), nodes that are off start from their own
    disks, and a lab whose swarm does not come back returns to `formed`; each lab's line says
    which. Exit 1 when any lab failed."""
    if (students is None) == (roster is None):
        raise configuration.ConfigError("give --students N or --roster FILE")
    if language is not None:
        exercise_files.require_language(language)
    ends_text = ends or ctx.config.class_ends
    if teardown and not ends_text:
        raise configuration.ConfigError("--teardown needs an end: give --ends HH:MM (or set [class] ends)")
    end_at = class_clock.parse_ends(ends_text, time.time(), "--ends" if ends else "[class] ends") if ends_text \
        else None
    labs.check_count(ctx.config, nodes)
    if roster is not None:
        try:
            text = open(roster, encoding="utf-8").read()
        except OSError as e:
            raise configuration.ConfigError(f"--roster {roster}: cannot read: {e.strerror}") from None
        wanted = rosters.students_from_roster(text, roster)
    else:
        wanted = rosters.students_from_count(students)
    enter_host()
    with NodeBoard() as board:
        results = classroom.class_up(ctx.config, wanted, nodes, board, not no_snapshot, end_at, teardown, language)
    render_lab_results(results, as_json, "ready")


@class_app.command("extend")
def class_extend(minutes: int = typer.Argument(..., metavar="MINUTES", help="How much later the class ends."),
                 as_json: bool = JsonOption):
    """Move the class's end later (a class that has ended, or has none, gets the minutes from
    now). Student pages show the new time within 10 s; terminals that closed at the end open
    again."""
    if not 1 <= minutes <= 24 * 60:
        raise configuration.ConfigError(f"MINUTES {minutes} is out of range: give 1 to 1440")
    room = classroom.require(ctx.config)
    room.ends = class_clock.extended(room.ends, minutes, time.time())
    classroom.save(ctx.config, room)
    said = class_clock.say_left(room.ends, time.time())
    if as_json:
        emit_json({"ends": room.ends, "teardown": room.teardown, "said": said})
    else:
        typer.echo(f"the class {said}" + ("; then its labs are graded and removed" if room.teardown else ""))


@class_app.command("end")
def class_end_now(yes: bool = typer.Option(False, "--yes", help="Confirm the end of a class made with --teardown: "
                                                                "its labs are then graded and removed."),
                  as_json: bool = JsonOption):
    """End the class now, as its clock would: the terminals close with the reason and Check
    still grades. `class extend MINUTES` opens the terminals again."""
    room = classroom.require(ctx.config)
    if room.teardown and not yes and not class_clock.over(room.ends, time.time()):
        raise Refused("this class was made with --teardown: ending it now grades every lab and removes it. "
                      "Pass --yes to do that, or `class extend` to move the end instead")
    room.ends = class_clock.ended_now(room.ends, time.time())
    classroom.save(ctx.config, room)
    said = class_clock.say_left(room.ends, time.time())
    if as_json:
        emit_json({"ends": room.ends, "teardown": room.teardown, "said": said})
    else:
        typer.echo(f"the class {said}: the portal closes the terminals within seconds"
                   + ("; then its labs are graded and removed" if room.teardown else ""))


@class_app.command("status")
def class_status(as_json: bool = JsonOption,
                 html: Optional[str] = typer.Option(None, "--html", metavar="FILE",
                                                    help="Also write a page for the projector; it reloads itself."),
                 watch: Optional[float] = typer.Option(None, "--watch", metavar="S",
                                                       help="Read and write again every S seconds, until Ctrl-C."),
                 names: bool = typer.Option(False, "--names",
                                            help="Name the students on the --html page; else each is a number "
                                                 "(their place in the roster), for a projector.")):
    """One row per student: host, nodes ready, swarm health, current exercise and its last
    check; then the class's clock. The --html page adds the progress grid."""
    from swarmlab.classroom import class_log
    from swarmlab.core import progress
    enter_host()
    while True:
        rows = classroom.class_status(ctx.config)
        ends = classroom.require(ctx.config).ends
        if html:
            from swarmlab.render import render
            exercises, grid = progress.grid(class_log.board(ctx.config)[1])
            page = render("class-status.html.j2", rows=rows, refresh=int(watch or 10), names=names,
                          at=time.strftime("%H:%M:%S"), clock=class_clock.say_left(ends, time.time()),
                          exercises=exercises, grid=grid, brief=progress.brief)
            tmp = f"{html}.tmp"
            with open(tmp, "w") as f:
                f.write(page)
            os.replace(tmp, html)
        if as_json:
            emit_json(rows)
        else:
            def check(row):
                last = row.get("last_check")
                return f"{last['exercise']} {last['passed']}/{last['of']}" if last else "-"
            table(("STUDENT", "LAB", "HOST", "READY", "SWARM", "EXERCISE", "LAST CHECK"),
                  [(r["student"], r["lab"], r["host"],
                    f"{r['ready']}/{r['nodes']}" + (f" ({', '.join(r['down'])} down)" if r.get("down") else ""),
                     r["swarm"] if "error" not in r else r["error"], r.get("exercise") or "-", check(r))
                    for r in rows])
            if ends is not None:
                typer.echo(f"the class {class_clock.say_left(ends, time.time())}")
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
    from swarmlab.classroom import access, portal_endpoint, portal_server
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
    enter_host()
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
    enter_host()
    rows = cards.cards(ctx.config)
    if rows and not rows[0]["portal_running"]:
        ctx.progress("no portal runs now: these cards say where `swarmlab portal` would listen by the config; "
                     "start it, then make the cards again")
    if out:
        for folder in cards.write_card_folders(ctx.config, Path(out)):
            ctx.progress(f"wrote {folder}")
    if html:
        from swarmlab.adapters.keys import write_private
        from swarmlab.render import render
        from swarmlab.classroom.page_text import class_language, page_text
        language = class_language(ctx.config)
        write_private(Path(html), render("class-cards.html.j2", cards=rows, language=language,
                                         t=page_text(language)))  # every student's token
    if as_json:
        emit_json(rows)
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
    exercise = exercise_files.find(exercise_id)
    enter_host()
    with NodeBoard() as board:
        results = class_exercises.class_start(ctx.config, exercise, board)
    render_lab_results(results, as_json, f"started {exercise.id}")


@class_app.command("check")
def class_check(exercise_id: str = ExerciseArgument,
                wait: bool = typer.Option(False, "--wait", help="Retry failing checks up to their timeout, as "
                                                                 "`exercise check` does by default."),
                junit: Optional[str] = typer.Option(None, "--junit", metavar="FILE",
                                                    help="Also write JUnit XML: one suite per student."),
                as_json: bool = JsonOption):
    """Check every student's lab at once: one row per student with the checks that pass. One
    pass by default, unlike `exercise check`: the room graded as it is now, since an unsolved
    lab would hold the run for every check's timeout. Exit 0 only when every lab passes every
    check."""
    exercise = exercise_files.find(exercise_id)
    enter_host()
    results = class_exercises.class_check(ctx.config, exercise, wait)
    if junit:
        with open(junit, "w") as f:
            f.write(class_exercises.junit(exercise.id, results))
    if as_json:
        emit_json([asdict(r) for r in results])
    else:
        def failing(r) -> str:
            bad = [v["check"] for v in r.detail.get("verdicts", []) if not v["ok"]]
            return r.error or ("✗ " + "; ".join(bad) if bad else "✓")
        table(("STUDENT", "LAB", "HOST", "PASSED", "RESULT"),
              [(r.student, r.lab, r.host, f"{sum(v['ok'] for v in r.detail.get('verdicts', []))}/"
                 f"{len(r.detail.get('verdicts', []))}", failing(r)) for r in results])
        typer.echo(f"{sum(r.ok for r in results)}/{len(results)} labs pass {exercise.id}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@class_app.command("report")
def class_report(csv_file: Optional[str] = typer.Option(None, "--csv", metavar="FILE",
                                                       help="Write CSV: a row per student and exercise, as "
                                                            "gradebooks import it (- for standard output)."),
                 html: Optional[str] = typer.Option(None, "--html", metavar="FILE", help="Also write the grid as a page."),
                 as_json: bool = JsonOption):
    """The class's progress from its record: per student and exercise, when it started, the
    student's attempts (Checks) and hints, the first pass and its time from the start, the best
    share of checks passed, and the last result. Works after `class down` too, until the next
    class's `class up`. Files hold the students' names: they are written 0600."""
    from swarmlab.adapters.keys import write_private
    from swarmlab.classroom import class_log
    from swarmlab.core import progress
    events, cells = class_log.board(ctx.config)
    if not class_log.roster(events):
        raise NotFound(f"no class record in {class_log.path(ctx.config)}: `swarmlab class up` starts one")
    if csv_file == "-":
        typer.echo(progress.report_csv(cells), nl=False)
        return
    if csv_file:
        write_private(Path(csv_file), progress.report_csv(cells))
        ctx.progress(f"wrote {csv_file} ({len(cells)} rows)")
    exercises, rows = progress.grid(cells)
    if html:
        from swarmlab.render import render
        write_private(Path(html), render("class-report.html.j2", exercises=exercises, rows=rows, names=True,
                                         brief=progress.brief, passed=sum(c.passed for c in cells),
                                         at=time.strftime("%Y-%m-%d %H:%M")))
        ctx.progress(f"wrote {html}")
    if as_json:
        emit_json(progress.report_json(cells))
    elif not exercises:
        typer.echo(f"{len(rows) or len(class_log.roster(events))} students; no exercise has started yet")
    else:
        table(("STUDENT", "LAB", *exercises), [(name, lab, *map(progress.brief, row)) for name, lab, row in rows])
        typer.echo("✓ m:ss to the first pass · ✗ the last check's result · a: attempts · h: hints")


@class_app.command("history")
def class_history(lab: str = typer.Argument(..., metavar="LAB", help="The student's lab (see `class status`)."),
                  exercise: Optional[str] = typer.Option(None, "--exercise", metavar="ID",
                                                         help="Only this exercise's events and the commands typed "
                                                              "while it was current."),
                  as_json: bool = JsonOption):
    """One student's history: starts, Checks, hints, resets, and each command typed on their
    nodes (read from the nodes first, secrets masked)."""
    from swarmlab.classroom import class_log, typed_history
    from swarmlab.core import progress, untrusted
    names = class_log.names(class_log.read(ctx.config))
    if lab not in names:
        raise NotFound(f"no student has lab {lab} in the class record (labs: {', '.join(names) or 'none'})")
    room = classroom.load(ctx.config)
    if room and room.student(lab):
        enter_host()
        typed_history.collect_quietly(ctx.config, lab)
    events = progress.history(class_log.read(ctx.config), lab, exercise)
    if as_json:
        emit_json(events)
        return
    typer.echo(f"{names[lab]} (lab {lab}){f', exercise {exercise}' if exercise else ''}: {len(events)} events")
    for e in events:
        typer.echo(f"{time.strftime('%H:%M:%S', time.localtime(e['at']))}  {untrusted.printable(progress.describe(e))}")


@class_app.command("reset")
def class_reset(level: Optional[str] = typer.Option(None, "--level", metavar="state|snapshot|rebuild",
                                                    help="Force a level; default: the cheapest that works per lab."),
                only: Optional[list[str]] = typer.Option(None, "--lab", metavar="LAB",
                                                         help="Only this student's lab (repeat for more)."),
                as_json: bool = JsonOption):
    """Reset every student's lab (or those given with --lab) to its `formed` snapshot, all at
    once; a node that was destroyed is started again. Exit 1 when any lab is not healthy
    afterwards."""
    if level is not None and level not in ("state", "snapshot", "rebuild"):
        raise configuration.ConfigError(f"--level {level} is not one of state, snapshot, rebuild")
    enter_host()
    if only:
        known = [s.lab for s in classroom.require(ctx.config).students]
        unknown = [lab for lab in only if lab not in known]
        if unknown:
            raise NotFound(f"the class has no lab {unknown[0]} (labs: {', '.join(known)}); see `swarmlab class status`")
    with NodeBoard() as board:
        results = classroom.class_reset(ctx.config, level, only=only or None, progress=board)
    render_lab_results(results, as_json, "reset")


@class_app.command("down")
def class_down(yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."), as_json: bool = JsonOption):
    """Remove every student's lab (domains, volumes, its network, DNS records) on every host."""
    enter_host()
    room = classroom.load(ctx.config)
    if room is None:
        if as_json:
            emit_json([])
        else:
            typer.echo("there is no class; nothing to remove")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise configuration.ConfigError(f"`class down` removes the labs of {len(room.students)} students: "
                                            "pass --yes to confirm")
        typer.confirm(f"remove the labs of all {len(room.students)} students?", abort=True)
    render_lab_results(classroom.class_down(ctx.config), as_json, "removed")
