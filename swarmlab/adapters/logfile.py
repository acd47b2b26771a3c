"""swarmlab's debug log: only swarmlab's own lines reach the terminal. Libraries (paramiko
above all) log channel failures and resets while nodes are killed on purpose: those go to
<state_dir>/swarmlab.log, or to stderr with --verbose. Known secrets are blanked in every
record, and the file and its rotations are 0600 from their first byte."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from swarmlab.config import Config
from swarmlab.core.command import redact_secrets


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Every file it opens, the first and each one after a rotation, is made 0600."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # a log made by an older swarmlab may be 0644
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def setup(config: Config, verbose: bool) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        root.setLevel(logging.DEBUG)
    else:
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
            handler = PrivateRotatingFileHandler(config.state_dir / "swarmlab.log", maxBytes=2 << 20, backupCount=2,
                                                 delay=True)
        except OSError:
            handler = logging.NullHandler()  # no writable state dir (e.g. `config` as a user)
        root.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    handler.addFilter(redact_secrets)
    root.addHandler(handler)
