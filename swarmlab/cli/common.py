"""What every command group shares: the root app and its options, the context (config,
progress lines), plain tables and JSON, the live node board."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Optional

import typer

from swarmlab import __version__, config as configuration
from swarmlab.cli.deferred import deferred

logfile = deferred("swarmlab.adapters.logfile")
node_account = deferred("swarmlab.classroom.node_account")
hoststate = deferred("swarmlab.host.hoststate")
lab_up = deferred("swarmlab.lab.lab_up")

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None,
                  help="Docker Swarm training labs on a libvirt host.")

JsonOption = typer.Option(False, "--json", help="Print a JSON document on stdout instead of text.")



def _student_account(config: configuration.Config, lab) -> list[str]:
    return node_account.student_account(config, lab)


# A class lab keeps its student's account whatever command makes its nodes anew.
LAB_FINISH = (_student_account,)


class Context:
    config: configuration.Config
    started = time.monotonic()

    def progress(self, message: str) -> None:
        typer.echo(f"[{time.monotonic() - self.started:6.1f}s] {message}", err=True)


ctx = Context()


def table(columns: tuple[str, ...], rows: list[tuple], indent: int = 0, right: set[str] = frozenset()) -> None:
    """A plain text table on stdout (rich lays it out; no colour, no box, any width)."""
    from rich.console import Console
    from rich.padding import Padding
    from rich.table import Table
    grid = Table(box=None, show_edge=False, pad_edge=False, header_style="", padding=(0, 2, 0, 0))
    for col in columns:
        grid.add_column(col, justify="right" if col in right else "left", no_wrap=True)
    for row in rows:
        grid.add_row(*[str(cell) for cell in row])
    console = Console(width=500, no_color=True, highlight=False, soft_wrap=True)
    with console.capture() as captured:
        console.print(Padding(grid, (0, 0, 0, indent)))
    for line in captured.get().splitlines():
        typer.echo(line.rstrip())


def emit_json(data) -> None:
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


def enter_host() -> None:
    hoststate.enter_host(ctx.config)


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

    def table(self):
        from rich.table import Table
        table = Table(box=None, header_style="bold")
        for col in ("node", "phase", "detail", "since start"):
            table.add_column(col)
        for node, (phase, detail, at) in self.rows.items():
            steps = " ".join(("●" if lab_up.PHASES.index(p) <= lab_up.PHASES.index(phase) else "○") for p in lab_up.PHASES) \
                if phase in lab_up.PHASES else ""
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
NodeArgument = typer.Argument(..., metavar="NODE", help="Node name, e.g. swr1.")
ExerciseArgument = typer.Argument(..., metavar="ID", help="Exercise id (`swarmlab exercise ls`).")
ImageOption = typer.Option([], "--image", metavar="NAME=REF",
                           help="Use another image for a parameter, e.g. whoami=traefik/whoami (remembered per lab).")


def _outcome(result) -> str:
    """"ok", with what was done or (a reset) the levels it ran; else why not."""
    if not result.ok:
        return result.error or "failed"
    if result.detail.get("did"):
        return f"ok: {result.detail['did']}"
    if result.detail.get("levels"):
        return f"ok: {' then '.join(result.detail['levels'])}"
    return "ok"


def render_lab_results(results: list, as_json: bool, what: str) -> None:
    if as_json:
        emit_json([asdict(r) for r in results])
    else:
        table(("STUDENT", "LAB", "HOST", "SECONDS", "RESULT"),
              [(r.student, r.lab, r.host, f"{r.seconds:.1f}", _outcome(r)) for r in results], right={"SECONDS"})
        typer.echo(f"{sum(r.ok for r in results)}/{len(results)} labs {what}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)
