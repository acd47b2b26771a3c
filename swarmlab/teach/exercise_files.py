"""An exercise as data: `labs/<id>/exercise.yaml` (validated against the schema, errors with
file and line) and its student text README.md, rendered for a lab with Jinja2: `{{ swr1 }}`
is a node's hostname, `{{ ip.swr1 }}` its address, `{{ fqdn.swr1 }}` its DNS name,
`{{ images.whoami }}` an image parameter, `{{ vars.NAME }}` what an earlier solution step
captured. Pure but for reading the files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import jinja2
import yaml

from swarmlab.config import ConfigError
from swarmlab.errors import NotFound, Refused, SwarmlabError
from swarmlab.lab.model import Lab

DEFAULT_CHECK_TIMEOUT = 90  # Swarm converges over tens of seconds under TCG


class ExerciseError(SwarmlabError):
    pass


class ExerciseFileError(ConfigError):
    """A bad exercise file: names the file, the line and the problem."""


def labs_dir() -> Path:
    package = Path(__file__).parent.parent
    packaged = package / "labs"  # wheel installs
    return packaged if packaged.is_dir() else package.parent / "labs"


@cache
def _schema() -> dict:
    return json.loads((labs_dir() / "exercise.schema.json").read_text())


@dataclass
class Exercise:
    id: str
    title: str
    goal: str
    requires: dict
    checks: list[dict]
    solution: list[dict]
    directory: Path
    text: str = ""
    order: int = 99
    images: dict[str, str] = field(default_factory=dict)
    corrections: list[str] = field(default_factory=list)
    setup: list[dict] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    language: str = "en"
    check_titles: list[str] = field(default_factory=list)  # in `language`; empty: the checks' own

    def summary(self) -> dict:
        return {"id": self.id, "title": self.title, "goal": self.goal, "requires": self.requires,
                "checks": len(self.checks), "hints": len(self.hints), "images": self.images}


# --- loading ---------------------------------------------------------------------------------
def _line_of(node: yaml.Node, path: list) -> int:
    """The line (1-based) of the YAML node at a JSON path, or of its nearest parent."""
    for key in path:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            found = node.value[key]
        else:
            found = None
        if found is None:
            break
        node = found
    return node.start_mark.line + 1


def _best_error(error):
    """For oneOf/anyOf failures, the deepest sub-error says more than 'is not valid under any'."""
    import jsonschema
    return jsonschema.exceptions.best_match([error]) if error.context else error


def load(path: Path) -> Exercise:
    """An exercise from its YAML file, validated; a bad file raises ExerciseFileError with the
    file and line."""
    try:
        text = path.read_text()
        tree = yaml.compose(text)
        data = yaml.safe_load(text)
    except OSError as e:
        raise ExerciseFileError(f"{path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ExerciseFileError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ExerciseFileError(f"{path}:1: an exercise file is a mapping (id:, title:, checks:, ...)")
    import jsonschema  # here, not at the top: every CLI call would pay ~0.1 s for it
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        error = _best_error(errors[0])
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise ExerciseFileError(f"{path}:{_line_of(tree, list(error.absolute_path))}: {where}: {error.message}")
    if data["id"] != path.parent.name:
        raise ExerciseFileError(f"{path}:{_line_of(tree, ['id'])}: id {data['id']!r} differs from its directory "
                                f"{path.parent.name!r}: rename one")
    readme = path.parent / "README.md"
    exercise = Exercise(directory=path.parent, text=readme.read_text() if readme.exists() else "", **data)
    for i, step in enumerate(exercise.setup + exercise.solution):
        if "copy" in step and not (exercise.directory / step["copy"]).is_file():
            section = "setup" if i < len(exercise.setup) else "solution"
            index = i if i < len(exercise.setup) else i - len(exercise.setup)
            raise ExerciseFileError(f"{path}:{_line_of(tree, [section, index])}: {step['copy']} is not in "
                                    f"{exercise.directory}")
    return exercise


# --- languages -------------------------------------------------------------------------------
LANGUAGES = ("en", "ru")  # English is the exercise files' own; the others are translations
TRANSLATED = ("title", "goal", "hints", "checks")


def require_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ConfigError(f"--lang {language} is not one of {', '.join(LANGUAGES)}")
    return language


def translate(exercise: Exercise, language: str) -> Exercise:
    """The exercise in `language`: README.<lang>.md and exercise.<lang>.yaml (title, goal,
    hints and the checks' titles, each list as long as the exercise's own). An exercise without
    them stays as it is, in English."""
    if language == "en":
        return exercise
    text_path = exercise.directory / f"README.{language}.md"
    data_path = exercise.directory / f"exercise.{language}.yaml"
    if not data_path.exists():
        return exercise
    try:
        data = yaml.safe_load(data_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ExerciseFileError(f"{data_path}: cannot read it: {e}") from None
    unknown = sorted(set(data) - set(TRANSLATED)) if isinstance(data, dict) else ["(not a mapping)"]
    if unknown:
        raise ExerciseFileError(f"{data_path}: {unknown[0]} is not translated here: give only {', '.join(TRANSLATED)}")
    for key, own in (("hints", exercise.hints), ("checks", exercise.checks)):
        if key in data and (not isinstance(data[key], list) or len(data[key]) != len(own)):
            raise ExerciseFileError(f"{data_path}: {key} has {len(data[key]) if isinstance(data[key], list) else 0} "
                                    f"entries, the exercise {len(own)}: translate each, in order")
    return replace(exercise, language=language, title=data.get("title", exercise.title),
                   goal=data.get("goal", exercise.goal), hints=data.get("hints", exercise.hints),
                   check_titles=data.get("checks", []),
                   text=text_path.read_text() if text_path.exists() else exercise.text)


def load_all(directory: Path | None = None) -> list[Exercise]:
    directory = directory or labs_dir()
    found = [load(p) for p in sorted(directory.glob("*/exercise.yaml"))]
    return sorted(found, key=lambda e: (e.order, e.id))


def find(exercise_id: str, directory: Path | None = None) -> Exercise:
    directory = directory or labs_dir()
    path = directory / exercise_id / "exercise.yaml"
    if "/" in exercise_id or not path.is_file():
        known = ", ".join(e.id for e in load_all(directory))
        raise NotFound(f"no exercise {exercise_id} (exercises: {known}): `swarmlab exercise ls` lists them")
    return load(path)


def parse_image_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, ref = item.partition("=")
        if not sep or not name or not ref:
            raise ConfigError(f"--image {item!r}: write NAME=REFERENCE, e.g. --image whoami=traefik/whoami")
        out[name] = ref
    return out


# --- rendering -------------------------------------------------------------------------------
_env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


def context(exercise: Exercise, lab: Lab | None, images: dict[str, str] | None = None,
            variables: dict[str, str] | None = None) -> dict:
    """What exercise templates see. Without a lab (`exercise show` before any lab exists) node
    references render as the article's names."""
    nodes = lab.nodes if lab else []
    names = {f"swr{i + 1}": (nodes[i].name if i < len(nodes) else f"swr{i + 1}") for i in range(9)}
    return {**names, "lab": lab.name if lab else "LAB", "node_count": len(nodes) or 3,
            "ip": {f"swr{i + 1}": n.ip for i, n in enumerate(nodes)} or {k: "IP" for k in names},
            "fqdn": {f"swr{i + 1}": n.fqdn.rstrip(".") for i, n in enumerate(nodes)} or {k: f"{k}.LAB.ZONE" for k in names},
            "images": {**exercise.images, **{k: v for k, v in (images or {}).items() if k in exercise.images}},
            "vars": variables or {}}


def render(template: str, ctx: dict, where: str) -> str:
    try:
        return _env.from_string(template).render(**ctx)
    except jinja2.TemplateError as e:
        raise ExerciseError(f"{where}: {e}: fix the exercise file") from None


def student_text(exercise: Exercise, ctx: dict) -> str:
    return render(exercise.text, ctx, f"{exercise.directory}/README.md")


def node_of(lab: Lab, logical: str):
    index = int(logical[3:]) - 1
    if index >= len(lab.nodes):
        raise Refused(f"the exercise uses {logical} but lab {lab.name} has {len(lab.nodes)} nodes")
    return lab.nodes[index]


def resolve(check: dict, ctx: dict) -> dict:
    """A check with its node references and templated strings resolved for this lab."""
    out = {}
    for key, value in check.items():
        if isinstance(value, str):
            value = render(value, ctx, f"check {check.get('type')}")
            if key == "node":
                value = ctx.get(value, value)  # swr1 -> this lab's first node
        elif isinstance(value, dict):
            value = resolve(value, ctx)
        elif isinstance(value, list):
            value = [render(v, ctx, "check") if isinstance(v, str) else v for v in value]
        out[key] = value
    return out
