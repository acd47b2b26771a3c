"""The `student` account on a class lab's nodes: in the docker group, with the student's key,
and a record of each command it runs in the account's own ~/.swarmlab-history, which
typed_history.py collects: the interactive bash records what is typed
(templates/student-history.bash.j2), and sshd's ForceCommand records a command given to ssh
(templates/student-ssh-command.sh.j2). A formation.Finish, so a
rebuilt lab gets it again; a lab without a student's credentials gets nothing."""

from __future__ import annotations

from fabric import Connection

from swarmlab.adapters.remote import connect, run
from swarmlab.classroom.access import STUDENT_USER, public_key
from swarmlab.config import Config
from swarmlab.core.command import Command, Raw, sh
from swarmlab.lab.model import Lab, each_node, ssh_target
from swarmlab.render import render

HISTORY_RECORD = f"/home/{STUDENT_USER}/.swarmlab-history"
HISTORY_HOOK = "/etc/swarmlab/history.bash"
SSH_COMMAND = "/etc/swarmlab/ssh-command"
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/swarmlab-student.conf"


def history_hook() -> str:
    return render("student-history.bash.j2", user=STUDENT_USER, record=HISTORY_RECORD).strip()


def ssh_command() -> str:
    return render("student-ssh-command.sh.j2", user=STUDENT_USER, record=HISTORY_RECORD).strip()


def node_account_command(key: str) -> Command:
    """Idempotent: the `student` account in the docker group, with exactly this key, and the
    history hook sourced by every interactive bash. Prints `changed` when it did anything."""
    script = f"""set -e
u={STUDENT_USER}; key="$1"; hook="$2"; wrapper="$3"
if ! id "$u" >/dev/null 2>&1; then useradd -m -s /bin/bash -G docker "$u"; echo changed; fi
h=$(getent passwd "$u" | cut -d: -f6)
if [ "$(cat "$h/.ssh/authorized_keys" 2>/dev/null)" != "$key" ]; then
  install -d -m 700 -o "$u" -g "$u" "$h/.ssh"
  printf '%s\\n' "$key" > "$h/.ssh/authorized_keys"
  chown "$u:$u" "$h/.ssh/authorized_keys"; chmod 600 "$h/.ssh/authorized_keys"; echo changed
fi
if [ "$(cat {HISTORY_HOOK} 2>/dev/null)" != "$hook" ]; then
  install -d -m 755 {HISTORY_HOOK.rsplit("/", 1)[0]}
  printf '%s\\n' "$hook" > {HISTORY_HOOK}; echo changed
fi
grep -qs '{HISTORY_HOOK}' /etc/bash.bashrc || {{ echo '. {HISTORY_HOOK}' >> /etc/bash.bashrc; echo changed; }}
if [ "$(cat {SSH_COMMAND} 2>/dev/null)" != "$wrapper" ]; then
  printf '%s\\n' "$wrapper" > {SSH_COMMAND}; chmod 755 {SSH_COMMAND}; echo changed
fi
if [ ! -s {SSHD_DROP_IN} ]; then
  # `Match all` ends the block: the drop-ins read after this one stay global
  printf 'Match User %s\\n    ForceCommand %s\\nMatch all\\n' "$u" {SSH_COMMAND} > {SSHD_DROP_IN}
  /usr/sbin/sshd -t || {{ rm -f {SSHD_DROP_IN}; echo "sshd refused {SSHD_DROP_IN}" >&2; exit 1; }}
  systemctl reload ssh; echo changed
fi"""
    # sh -c SCRIPT sh KEY HOOK WRAPPER: each arrives as $1, $2, $3, quoted
    return Command(sh(script), Raw("sh"), key, history_hook(), ssh_command())


def ensure_node_account(conn: Connection, key: str) -> bool:
    return "changed" in run(conn, node_account_command(key), timeout=60)


def ensure_lab_accounts(config: Config, lab: Lab) -> bool:
    """The student's account on every node of a class lab (one with credentials), also after a
    rebuild made the nodes anew; nothing for any other lab. True if a node changed."""
    key = public_key(config, lab.name)
    if key is None:
        return False

    def account(node) -> bool:
        with connect(ssh_target(config, lab.name, node)) as conn:
            return ensure_node_account(conn, key)
    return any(each_node(account, lab.nodes))


def student_account(config: Config, lab: Lab) -> list[str]:
    """What a class adds to each lab it makes (a formation.Finish): the student's account, also
    after a rebuild made the nodes anew."""
    return [f"made the {STUDENT_USER} account on {len(lab.nodes)} nodes"] if ensure_lab_accounts(config, lab) else []
