"""Modules the CLI imports at first use, not at start: `swarmlab --help`, a usage error or
`class extend` need none of libvirt, fabric, jinja2 and requests, half a second of every start.

Unlike importlib's LazyLoader, nothing lazy goes into sys.modules: the first use is an
ordinary import (under the import lock, so threads are safe), and every other module imports
the real thing."""

from __future__ import annotations

import importlib


class Deferred:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<deferred module {self._name}>"


def deferred(name: str) -> Deferred:
    return Deferred(name)
