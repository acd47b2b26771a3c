"""Which lab a portal token belongs to, without reading every student's token file at each
request: the tokens are read again whenever the class's plan or its credentials change (a
revocation removes a lab's folder, which changes theirs), so `class down` still revokes at once."""

from __future__ import annotations

import hmac
import os
import threading

from swarmlab.classroom import access, class_file
from swarmlab.config import Config


class TokenBook:
    def __init__(self, config: Config):
        self.config = config
        self.seen: tuple | None = None
        self.by_lab: dict[str, str] = {}
        self.lock = threading.Lock()

    def _version(self) -> tuple:
        out = []
        for path in (class_file.path(self.config), access.credentials_root(self.config)):
            try:
                st = os.stat(path)
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def lab_of(self, offered: str) -> str | None:
        """The lab whose token this is, compared in constant time with every token; None for any other."""
        with self.lock:
            version = self._version()
            if version != self.seen:
                room = class_file.load(self.config)
                tokens = {s.lab: access.token(self.config, s.lab) for s in (room.students if room else [])}
                self.by_lab = {lab: t for lab, t in tokens.items() if t}
                self.seen = version
            by_lab = dict(self.by_lab)
        found = None
        for lab, wanted in by_lab.items():
            if hmac.compare_digest(wanted.encode(), offered.encode()):
                found = lab
        return found
