"""Talking RADIUS to a NAS: Disconnect-Request and CoA-Request (RFC 5176) with pyrad, and their answers."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pyrad import packet
from pyrad.client import Client, Timeout
from pyrad.dictionary import Dictionary

DICTIONARY = Path(__file__).with_name("dictionary")
ACK_CODES = {packet.DisconnectACK: "Disconnect-ACK", packet.CoAACK: "CoA-ACK"}
NAK_CODES = {packet.DisconnectNAK: "Disconnect-NAK", packet.CoANAK: "CoA-NAK"}
# A NAK saying the session is already gone: the disconnect's purpose is met.
SESSION_GONE = 503


@lru_cache(maxsize=1)
def dictionary() -> Dictionary:
    """The vendored attribute dictionary (RFC attributes and MikroTik's)."""
    return Dictionary(str(DICTIONARY))


@dataclass(frozen=True)
class Outcome:
    """What the NAS said: acked, or a NAK with its Error-Cause, or nothing (timeout, unreachable)."""

    acked: bool
    answered: bool
    response: str | None = None
    error_cause: int | None = None
    error: str | None = None


def send_change(*, nas_address: str, coa_port: int, secret: str, kind: str, username: str | None,
                acct_session_id: str | None, framed_ip: str | None, attributes: dict | None = None,
                timeout: float = 2.0, retries: int = 1) -> Outcome:
    """Send a Disconnect-Request ("disconnect") or CoA-Request ("coa") naming one session; never raises."""
    client = Client(server=nas_address, secret=secret.encode(), dict=dictionary(), coaport=coa_port)
    client.timeout = timeout
    client.retries = retries
    code = packet.DisconnectRequest if kind == "disconnect" else packet.CoARequest
    try:
        request = client.CreateCoAPacket(code=code)
        # The session's identity, as RFC 5176 §3 asks: its login, its accounting session id and its address.
        if username:
            request["User-Name"] = username
        if acct_session_id:
            request["Acct-Session-Id"] = acct_session_id
        if framed_ip and ":" not in framed_ip:
            request["Framed-IP-Address"] = framed_ip
        for name, value in (attributes or {}).items():
            request[name] = value
        request.add_message_authenticator()
        reply = client.SendPacket(request)
    except Timeout:
        return Outcome(False, False, error=f"no answer from {nas_address}:{coa_port} after {retries + 1} tries")
    except OSError as exc:
        return Outcome(False, False, error=f"{nas_address}:{coa_port}: {exc}")
    except (KeyError, ValueError, TypeError) as exc:  # an attribute the dictionary does not know, a bad value
        return Outcome(False, False, error=f"could not build the request: {exc}")
    finally:
        client._CloseSocket()  # pyrad keeps its UDP socket open otherwise (one leaked per request)
    if reply.code in ACK_CODES:
        return Outcome(True, True, ACK_CODES[reply.code])
    cause = reply.get("Error-Cause")
    cause_code = _cause_number(cause[0]) if cause else None
    return Outcome(False, True, NAK_CODES.get(reply.code, f"code {reply.code}"), cause_code)


def _cause_number(value) -> int | None:
    if isinstance(value, int):
        return value
    try:
        return int(dictionary().attributes["Error-Cause"].values.GetForward(value))
    except (KeyError, ValueError, TypeError):
        return None
