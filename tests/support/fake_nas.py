"""A fake NAS for tests: a pyrad server on a loopback CoA port that records every Disconnect/CoA-Request it gets
and answers ACK (or NAK, or nothing, as the test says)."""
from __future__ import annotations

import select
import socket
import threading
import time
from contextlib import suppress
from dataclasses import dataclass

from pyrad import packet
from pyrad.dictionary import Dictionary
from pyrad.server import RemoteHost, Server

from tests.support.radius import DICTIONARY, free_port


@dataclass
class Received:
    """One request the NAS received: its kind and attributes by name."""

    kind: str  # "disconnect" | "coa"
    attributes: dict[str, list]

    def first(self, name: str):
        """The first value of an attribute, or None."""
        values = self.attributes.get(name)
        return values[0] if values else None


class FakeNas(Server):
    """Answers Disconnect-Request and CoA-Request on 127.0.0.1:<port>; `answer` is "ack", "nak" or "silent"."""

    def __init__(self, secret: str = "nas-secret", port: int | None = None):
        self.port = port or free_port()
        self.secret = secret
        super().__init__(addresses=[], dict=Dictionary(str(DICTIONARY)), coa_enabled=True, auth_enabled=False,
                         acct_enabled=False, coaport=self.port,
                         hosts={"127.0.0.1": RemoteHost("127.0.0.1", secret.encode(), "test-client")})
        self.received: list[Received] = []
        self.answer = "ack"
        self.error_cause: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> FakeNas:
        """Bind and serve in a thread."""
        self.BindToAddress("127.0.0.1")
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        sockets = [fd for fd in self.coafds]
        while not self._stop.is_set():
            ready, _, _ = select.select(sockets, [], [], 0.05)
            for sock in ready:
                with suppress(Exception):  # a malformed packet is dropped, as a NAS would
                    self._ProcessInput(sock)

    def stop(self) -> None:
        """Stop serving and close the port."""
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        for sock in self.coafds:
            sock.close()

    def _record(self, pkt, kind: str) -> None:
        attributes = {key: list(pkt[key]) for key in pkt.keys() if isinstance(key, str)}  # noqa: SIM118  (pyrad's keys() decodes names)
        self.received.append(Received(kind, attributes))

    def _reply(self, pkt, ack: int, nak: int) -> None:
        if self.answer == "silent":
            return
        reply = self.CreateReplyPacket(pkt)
        reply.code = ack if self.answer == "ack" else nak
        if self.answer == "nak" and self.error_cause:
            reply["Error-Cause"] = self.error_cause
        self.SendReplyPacket(pkt.fd, reply)

    def HandleDisconnectPacket(self, pkt):  # noqa: N802  (pyrad's name)
        """Record a Disconnect-Request and answer it."""
        self._record(pkt, "disconnect")
        self._reply(pkt, packet.DisconnectACK, packet.DisconnectNAK)

    def HandleCoaPacket(self, pkt):  # noqa: N802
        """Record a CoA-Request and answer it."""
        self._record(pkt, "coa")
        self._reply(pkt, packet.CoAACK, packet.CoANAK)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until `count` requests have arrived; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)


def closed_udp_port() -> int:
    """A loopback UDP port with nothing listening (a NAS that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
