"""Files that hold secrets: the PowerDNS API key and the lab's SSH key, 0600 from their first
byte. Their contents are never printed or logged."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from swarmlab.config import Config
from swarmlab.errors import SwarmlabError


def write_private(path: Path, content: str) -> None:
    """Writes a file that is 0600 from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    tmp.replace(path)


def ensure_api_key(config: Config) -> tuple[str, bool]:
    try:
        return config.api_key(), False
    except SwarmlabError:
        if config.api_key_path.exists():
            raise
    key = secrets.token_urlsafe(32)
    write_private(config.api_key_path, key + "\n")
    return key, True


def ensure_ssh_key(config: Config) -> bool:
    path = config.ssh_key_path
    if path.exists() and path.with_suffix(".pub").exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in (path, path.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "swarmlab", "-f", str(path)],
                   check=True, capture_output=True)
    path.chmod(0o600)
    return True


