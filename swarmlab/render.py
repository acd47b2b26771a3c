"""Jinja2 rendering of the files under templates/ (libvirt XML, PowerDNS config)."""

from functools import cache
from pathlib import Path

import jinja2


def templates_dir() -> Path:
    packaged = Path(__file__).parent / "templates"  # wheel installs
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()),
                              undefined=jinja2.StrictUndefined,
                              # markup only: pdns.conf is not XML, and an escaped value there is a wrong value
                              autoescape=lambda name: bool(name) and name.endswith((".xml.j2", ".html.j2")),
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def render(template: str, **values) -> str:
    return _env().get_template(template).render(**values)
