"""`max_processes`: how many processes one server may have at once. A spawn waits for room under
the cap; a session or 2026-07-28 request that needs a process of its own claims one first, and is
refused at once (TooManyProcesses) when every process the server may have is claimed."""

from __future__ import annotations

import anyio

from mcpmesh.errors import TooManyProcesses


class ProcessGate:
    """The processes of one local server: how many live, how many are claimed, how many refused.
    `cap` None: no cap (a remote server has no processes)."""

    def __init__(self, server: str, cap: int | None):
        self.server, self.cap = server, cap
        self.live = 0
        self.claimed = 0
        self.refused = 0  # claims turned down at the cap, since the mesh started
        self._held: dict[int, Claim] = {}  # pid: the claim its process serves
        self._room = anyio.Event()

    async def admit(self) -> None:
        """Wait until one more process fits under the cap, and count it as live."""
        while self.cap is not None and self.live >= self.cap:
            await self._room.wait()
        self.live += 1

    def exited(self, pid: int | None = None) -> None:
        """A process admitted is gone (or never started): its room, and any claim on it, are free."""
        self.live -= 1
        claim = self._held.pop(pid, None) if pid is not None else None
        if claim is not None:
            claim.release()
        self._room.set()
        self._room = anyio.Event()

    def claim(self) -> Claim:
        """A process promised to one session or request; TooManyProcesses when none is left to promise."""
        if self.cap is not None and self.claimed >= self.cap:
            self.refused += 1
            setting = f"servers.{self.server}.max_processes"
            raise TooManyProcesses(
                f"server {self.server!r} has all the processes it may have (max_processes = {self.cap}) in use "
                f"by other sessions and requests: retry once one ends, or raise {setting}",
                {"server": self.server, "max_processes": self.cap, "setting": setting},
            )
        self.claimed += 1
        return Claim(self)


class Claim:
    """One session's or request's promise of a process; released once, however often it is asked."""

    def __init__(self, gate: ProcessGate):
        self._gate: ProcessGate | None = gate

    def hold(self, pid: int | None) -> None:
        """The process now serving it: the claim ends when that process does, at the latest."""
        if self._gate is not None and pid is not None:
            self._gate._held[pid] = self

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.claimed -= 1
