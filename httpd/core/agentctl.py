"""What host.restart_agent, host.shutdown_agent, host.reboot and host.shutdown ask of the agent's
process. A message only records the request; the runner waits for it, stops the agent gracefully
(the reply already sent, every domain saved) and then acts: exec itself again, exit, or run the
configured host power command (`--host-power-command CMD` runs `CMD reboot` / `CMD poweroff`).
"""

from __future__ import annotations

import asyncio

__all__ = ["AgentControl", "ACTIONS"]

ACTIONS = ("restart", "stop", "reboot", "poweroff")


class AgentControl:
    def __init__(self) -> None:
        self.action: str | None = None
        self._requested = asyncio.Event()

    def request(self, action: str) -> None:
        """After the current reply: the first request wins, later ones change nothing."""
        if action not in ACTIONS:
            raise ValueError(action)
        if self.action is None:
            self.action = action
            asyncio.get_running_loop().call_soon(self._requested.set)

    async def wait(self) -> str:
        await self._requested.wait()
        assert self.action is not None
        return self.action
