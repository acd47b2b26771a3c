"""The terminals bench_class_load.py types into (the portal's websocket, an SSH process), each
timing a marker's echo, and the percentiles it reports."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict:
    return {"n": len(values), **{f"p{p}": (round(v * 1000, 1) if (v := percentile(values, p)) is not None else None)
                                 for p in (50, 95, 99)}}


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][-100:] if lines else ""


class Shell:
    """A terminal that is typed into and read from; `echo()` times a marker's echo."""

    def __init__(self):
        self.seen = ""
        self.changed = asyncio.Event()

    def took(self, data: str) -> None:
        self.seen = (self.seen + data)[-4096:]
        self.changed.set()

    async def send(self, text: str) -> None:
        raise NotImplementedError

    async def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True

    async def echo(self, marker: str, timeout: float = 30) -> float | None:
        self.seen = ""
        began = time.monotonic()
        await self.send(f"echo {marker}\r")
        return time.monotonic() - began if await self.wait_for(marker, timeout) else None


class PortalTerminal(Shell):
    def __init__(self, ws):
        super().__init__()
        self.ws = ws

    async def send(self, text: str) -> None:
        await self.ws.send_str(json.dumps({"type": "input", "data": text}))

    async def pump(self) -> None:
        async for message in self.ws:
            if message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                data = message.data
                self.took(data.decode(errors="replace") if isinstance(data, bytes) else data)


class ProcessShell(Shell):
    """An asyncssh process or an OpenSSH subprocess: anything with stdin.write and stdout.read."""

    def __init__(self, stdin, stdout):
        super().__init__()
        self.stdin, self.stdout = stdin, stdout

    async def send(self, text: str) -> None:
        self.stdin.write(text.encode())
        await self.stdin.drain()

    async def pump(self) -> None:
        while data := await self.stdout.read(65536):
            self.took(data.decode(errors="replace") if isinstance(data, bytes) else data)
