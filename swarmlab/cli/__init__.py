"""The `swarmlab` command: parse, call the orchestration, render. No logic of its own: one
module per command group, registered on the root app in the order `--help` lists them."""

from __future__ import annotations

import sys

import typer

from swarmlab.cli.common import app
from swarmlab.errors import SwarmlabError

# Each group registers its commands on import, in this order (the order `--help` lists them).
from . import chaos, classroom, exercise, host, lab, snapshot  # noqa: F401,I001

# Typer keeps its click private; its public BadParameter derives from click's ClickException.
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


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
