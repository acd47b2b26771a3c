"""Remote commands: every argument quoted, secrets masked wherever a command is shown or logged."""

import logging

from swarmlab.core import swarm
from swarmlab.core.command import Command, Raw, Secret, redact, redact_secrets, sh, then


def test_arguments_are_quoted_and_raw_syntax_is_kept():
    c = then(Command("docker", "node", "rm", "--force", "x; reboot"), Command("echo", "$HOME"))
    assert c.shell == "docker node rm --force 'x; reboot' && echo '$HOME'"
    assert Command("command", "-v", "dockerd", Raw("|| true")).shell == "command -v dockerd || true"
    assert sh("echo a && echo b").shell == "sh -c 'echo a && echo b'"


def test_secrets_run_but_are_never_shown():
    token = "SWMTKN-1-0123456789abcdef-secret"
    c = Command("docker", "swarm", "join", "--token", Secret(token), "10.77.0.10:2377")
    assert token in c.shell
    assert token not in c.shown and token not in str(c) and token not in repr(c)
    assert c.shown == "docker swarm join --token <hidden> 10.77.0.10:2377"
    assert redact(f"error: {token} rejected") == "error: <hidden> rejected"


def test_log_records_are_redacted(caplog):
    token = "SWMTKN-1-another-secret-token"
    Secret(token)
    record = logging.LogRecord("paramiko", logging.DEBUG, __file__, 1, "sent %s", (token,), None)
    assert redact_secrets(record) and record.getMessage() == "sent <hidden>"


def test_facts_pair_a_command_with_its_parser():
    assert swarm.SWARM.command.shell == "docker info --format '{{json .Swarm}}'"
    assert swarm.SWARM.parse('{"LocalNodeState":"active","ControlAvailable":true,"Managers":3}').is_manager
    assert swarm.node_labels("swr1; x").command.shell == (
        "docker node inspect --format '{{json .Spec.Labels}}' 'swr1; x'")
    assert swarm.node_labels("swr1").parse("null") == {}
