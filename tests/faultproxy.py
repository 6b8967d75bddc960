"""A TCP proxy for tests, between the app and its PostgreSQL, that breaks the link on demand.

`cut()` drops every connection through it at once (both ends reset, as a dead
router or a failover would), `latency(seconds)` delays every chunk each way,
`blackhole(True)` accepts and swallows everything, answering nothing (as a
partitioned network would), `blackhole(False)` heals it. It runs on an asyncio
loop in a thread of its own; the methods may be called from any thread.
"""

import asyncio
import threading

from server import free_port


class FaultProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.delay = 0.0
        self.swallowing = False
        self.connections: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="faultproxy", daemon=True)

    def start(self) -> "FaultProxy":
        self.thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self.cut()
        self._call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

    def cut(self) -> int:
        """Reset every connection open through the proxy; returns how many there were."""
        return self._call(self._cut())

    def latency(self, seconds: float) -> None:
        self.delay = seconds

    def blackhole(self, on: bool = True) -> None:
        self.swallowing = on

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _close(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _cut(self) -> int:
        count = len(self.connections)
        for writer in list(self.connections):
            writer.transport.abort()  # RST, not a polite FIN: nothing more arrives
        self.connections.clear()
        return count // 2

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections.add(client_writer)
        try:
            while self.swallowing:  # no server behind: read and drop until healed or cut
                if not await client_reader.read(65536):
                    return
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections.add(server_writer)
        await asyncio.gather(
            self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer), return_exceptions=True
        )
        for writer in (client_writer, server_writer):
            self.connections.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.swallowing:
                continue
            if self.delay:
                await asyncio.sleep(self.delay)
            writer.write(data)
            await writer.drain()
        writer.transport.abort()
