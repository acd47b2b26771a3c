"""What the hostile student of bench_class_load.py does besides flooding and pressing Check, all
at once: every vCPU of their nodes spinning, a terminal whose browser never reads (kept alive by
a small frame now and then), their disk filled, and their history file poisoned (bad times,
escape sequences, a megabyte of lines). Also the hostile lab's CPU time, as libvirt counts it."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import libvirt

from swarmlab.classroom import access
from swarmlab.classroom.node_account import HISTORY_RECORD
from swarmlab.lab import model as labs

# As the student, on each of their nodes: spin every vCPU, poison the history, fill the disk.
HOSTILE_SCRIPT = f"""
for i in $(seq $(nproc)); do nohup timeout {{seconds}} sh -c 'while :; do :; done' >/dev/null 2>&1 & done
{{{{ printf '²\\tdocker ps\\n'; printf '%0400d\\tdocker node ls\\n' 9; printf '1700000000\\t\\033]0;owned\\007\\033[2Jx\\n'
   yes "$(date +%s)	ls" | head -c 1048576; }}}} >> {HISTORY_RECORD}
nohup timeout {{seconds}} dd if=/dev/zero of=$HOME/fill bs=1M >/dev/null 2>&1 &
echo started
"""


async def attack_nodes(config, card: dict, seconds: int, errors) -> None:
    for node in card["nodes"]:
        try:
            conn = await access.connect_as_student(config, card["lab"], node["ip"])
        except Exception as e:  # asyncssh's errors
            errors[f"hostile setup: {type(e).__name__}"] += 1
            continue
        try:
            result = await conn.run(HOSTILE_SCRIPT.format(seconds=seconds), check=False)
            if "started" not in (result.stdout or ""):
                errors["hostile setup: the script did not start"] += 1
        finally:
            conn.close()


async def stuck_terminal(http: aiohttp.ClientSession, url: str, ssl, stop: asyncio.Event) -> None:
    """A browser tab that stopped reading: its shell floods, and a small frame every 15 s keeps
    the websocket alive (it resets aiohttp's heartbeat)."""
    try:
        ws = await http.ws_connect(url, ssl=ssl, max_msg_size=0, autoping=False)
    except (aiohttp.ClientError, OSError):
        return
    try:
        await ws.send_str(json.dumps({"type": "input", "data": "yes stuck-tab\r"}))
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 15)
            except asyncio.TimeoutError:
                await ws.send_str(json.dumps({"type": "resize", "cols": 80, "rows": 24}))
    except (aiohttp.ClientError, ConnectionError):
        pass  # let go by the portal, as it should be
    finally:
        await ws.close()


def lab_cpu_seconds(config, lab: str) -> float:
    """CPU time libvirt counts for every domain of the lab, in seconds."""
    scoped = labs.lab_config(config, lab)
    journal = labs.load_journal(scoped, lab)
    conn = libvirt.open(scoped.uri)
    try:
        return sum(conn.lookupByName(n.domain).getCPUStats(True)[0]["cpu_time"] for n in journal.nodes) / 1e9
    finally:
        conn.close()
