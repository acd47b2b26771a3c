"""`exercise`: the article's exercises, one lab at a time."""

from __future__ import annotations

import time
from typing import Optional

import typer

from swarmlab import config as configuration
from swarmlab.cli.common import (LAB_FINISH, ExerciseArgument, ImageOption, JsonOption, LabOption, app, ctx, emit_json,
                                 enter_host, table)
from swarmlab.cli.deferred import deferred

labs = deferred("swarmlab.lab.model")
exercise_files = deferred("swarmlab.teach.exercise_files")
exercises = deferred("swarmlab.teach.exercises")

exercise_app = typer.Typer(no_args_is_help=True, help="The article's exercises (labs/): set up, check, hint, solve.")
app.add_typer(exercise_app, name="exercise")


@exercise_app.command("ls")
def exercise_ls(as_json: bool = JsonOption):
    """The exercises in labs/, in teaching order."""
    found = exercise_files.load_all()
    if as_json:
        emit_json([e.summary() for e in found])
        return
    table(("ID", "NODES", "CHECKS", "HINTS", "TITLE"),
          [(e.id, e.requires["nodes"], len(e.checks), len(e.hints), e.title) for e in found], right={"NODES", "CHECKS", "HINTS"})


@exercise_app.command("show")
def exercise_show(exercise_id: str = ExerciseArgument, lab: Optional[str] = LabOption,
                  images: list[str] = ImageOption,
                  notes: bool = typer.Option(False, "--notes", help="Also show the article's errors this exercise corrects "
                                                                     "(for the instructor)."),
                  language: Optional[str] = typer.Option(None, "--lang", metavar="en|ru",
                                                         help="The text's language (default: [class] language).")):
    """The student text (never the solution), with this lab's node names and addresses when
    the lab exists."""
    language = exercise_files.require_language(language or ctx.config.class_language)
    exercise = exercise_files.translate(exercise_files.find(exercise_id), language)
    chosen = exercise_files.parse_image_overrides(images)
    name = lab or ctx.config.lab
    lab_model = labs.load_journal(ctx.config, name)
    if lab_model is not None:
        chosen = {**exercises.load_state(ctx.config, name).get("images", {}), **chosen}
    context = exercise_files.context(exercise, lab_model, chosen)
    typer.echo(exercise_files.student_text(exercise, context).rstrip())
    if notes and exercise.corrections:
        typer.echo("\nCorrected from the article:")
        for line in exercise.corrections:
            typer.echo(f"- {exercise_files.render(line, context, exercise.id)}")


@exercise_app.command("start")
def exercise_start(exercise_id: str = ExerciseArgument, lab: Optional[str] = LabOption,
                   images: list[str] = ImageOption, as_json: bool = JsonOption):
    """Put the lab at the exercise's starting point: reset to the `formed` snapshot (the
    cheapest level that works), then the exercise's setup. The previous exercise's leftovers
    are gone."""
    exercise = exercise_files.find(exercise_id)
    chosen = exercise_files.parse_image_overrides(images)
    enter_host()
    result = exercises.start(ctx.config, lab or ctx.config.lab, exercise, chosen, ctx.progress, LAB_FINISH)
    if as_json:
        emit_json(result)
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
    checks are retried up to their timeout, since Swarm converges over time (`class check`
    does one pass unless --wait). Exit 0 only when every check passes, 1 otherwise."""
    exercise = exercise_files.find(exercise_id)
    enter_host()
    name = lab or ctx.config.lab
    began = time.monotonic()
    verdicts = exercises.check(ctx.config, name, exercise, wait=not no_wait, progress=ctx.progress)
    if junit:
        with open(junit, "w") as f:
            f.write(exercises.junit(exercise, name, verdicts, time.monotonic() - began))
    passed = sum(v.ok for v in verdicts)
    if as_json:
        emit_json({"lab": name, "exercise": exercise.id, "passed": passed, "of": len(verdicts),
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
    exercise = exercise_files.find(exercise_id)
    result = exercises.hint(ctx.config, lab or ctx.config.lab, exercise)
    if as_json:
        emit_json(result)
    elif result["hint"] is None:
        typer.echo(f"exercise {exercise.id} has no hints")
    else:
        typer.echo(f"hint {result['number']}/{result['of']}: {result['hint']}")


@exercise_app.command("solve")
def exercise_solve(exercise_id: str = ExerciseArgument, lab: Optional[str] = LabOption):
    """Run the reference solution on the lab, showing each command and the node it runs on."""
    exercise = exercise_files.find(exercise_id)
    enter_host()
    exercises.solve(ctx.config, lab or ctx.config.lab, exercise, lambda m: typer.echo(m))
    typer.echo(f"solution done: `swarmlab exercise check {exercise.id}` verifies it")


@exercise_app.command("test")
def exercise_test(exercise_ids: Optional[list[str]] = typer.Argument(None, metavar="[ID]..."),
                  all_exercises: bool = typer.Option(False, "--all", help="Every exercise, in teaching order."),
                  lab: Optional[str] = LabOption, as_json: bool = JsonOption):
    """Each exercise tests itself on a lab, in the order given: start, check (which must fail),
    solve, check (which must pass). Exit 0 only when every exercise passes."""
    if bool(exercise_ids) == all_exercises:
        raise configuration.ConfigError("give exercise IDs or --all")
    chosen = exercise_files.load_all() if all_exercises else [exercise_files.find(i) for i in exercise_ids]
    enter_host()
    name = lab or ctx.config.lab
    results = []
    for exercise in chosen:
        result = exercises.self_test(ctx.config, name, exercise, ctx.progress)
        results.append(result)
        if not as_json:
            typer.echo(f"{'✓' if result.ok else '✗'} {exercise.id} ({result.seconds:.1f} s)"
                       + ("" if result.ok else f": {result.error}"))
    if as_json:
        emit_json([r.as_dict() for r in results])
    else:
        typer.echo(f"{sum(r.ok for r in results)}/{len(results)} exercises pass in "
                   f"{sum(r.seconds for r in results):.1f} s")
    if not all(r.ok for r in results):
        raise typer.Exit(1)
