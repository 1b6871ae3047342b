"""A real FreeRADIUS 3.2 for tests (NETWORK.md's recipe) running the shipped deploy/freeradius config, and a
pyrad client that speaks to it as a NAS would: Access-Request (PAP, CHAP) and Accounting Start/Interim/Stop."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyrad import packet
from pyrad.client import Client
from pyrad.dictionary import Dictionary
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_RADDB = Path("/etc/freeradius/3.0")
FREERADIUS = Path("/usr/sbin/freeradius")
DICTIONARY = ROOT / "isp_admin" / "services" / "network" / "dictionary"
SECRET = b"testing123"  # Debian's clients.conf secret for 127.0.0.1


def available() -> bool:
    """Whether FreeRADIUS (and its PostgreSQL driver) is installed here."""
    return FREERADIUS.exists() and (SYSTEM_RADDB / "mods-available" / "sql").exists()


def free_port() -> int:
    """A UDP port nobody is bound to on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _set(text: str, key: str, value: str) -> str:
    return re.sub(rf"(?m)^(\s*){key}\s*=.*$", rf"\g<1>{key} = {value}", text, count=1)


class FreeRadius:
    """FreeRADIUS in the foreground on loopback ports, reading the given PostgreSQL database."""

    def __init__(self, database_url: str, workdir: Path):
        self.url = make_url(database_url)
        self.dir = Path(workdir)
        self.auth_port = free_port()
        self.acct_port = free_port()
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    def _build(self) -> Path:
        raddb = self.dir / "raddb"
        if raddb.exists():
            shutil.rmtree(raddb)
        shutil.copytree(SYSTEM_RADDB, raddb, symlinks=True)
        conf = (raddb / "radiusd.conf").read_text()
        for key in ("logdir", "run_dir", "db_dir"):
            conf = _set(conf, key, str(self.dir / key))
            (self.dir / key).mkdir(exist_ok=True)
        conf = _set(conf, "reject_delay", "0")
        conf = re.sub(r"(?m)^(\s*)(user|group) = freerad", r"\1#\2 = freerad", conf)
        (raddb / "radiusd.conf").write_text(conf)
        for name in ("mods-enabled/eap", "sites-enabled/inner-tunnel", "sites-enabled/default"):
            (raddb / name).unlink(missing_ok=True)
        # The shipped files, as an operator installs them; only the listen address and ports change.
        (raddb / "mods-enabled" / "sql").write_text((ROOT / "deploy" / "freeradius" / "sql").read_text())
        site = (ROOT / "deploy" / "freeradius" / "site").read_text()
        site = site.replace("ipaddr = *", "ipaddr = 127.0.0.1")
        site = site.replace("port = 1812", f"port = {self.auth_port}")
        site = site.replace("port = 1813", f"port = {self.acct_port}")
        (raddb / "sites-enabled" / "isp_admin").write_text(site)
        subprocess.run(["chmod", "-R", "go-w", str(raddb)], check=True)
        return raddb

    def start(self, timeout: float = 10.0) -> FreeRadius:
        """Start it and wait for 'Ready to process requests'."""
        raddb = self._build()
        env = dict(os.environ, RADIUS_DB_HOST=self.url.host or "127.0.0.1", RADIUS_DB_PORT=str(self.url.port or 5432),
                   RADIUS_DB_USER=self.url.username or "postgres", RADIUS_DB_PASSWORD=self.url.password or "",
                   RADIUS_DB_NAME=self.url.database)
        command = [str(FREERADIUS), "-f", "-l", "stdout", "-d", str(raddb)]
        if os.geteuid() == 0:  # as root FreeRADIUS would switch user; run it as nobody, as NETWORK.md verified
            subprocess.run(["chown", "-R", "nobody:nogroup", str(self.dir)], check=True)
            command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        ready = threading.Event()

        def pump():
            for line in self.process.stdout:
                self.output.append(line.rstrip())
                if "Ready to process requests" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("FreeRADIUS did not start:\n" + "\n".join(self.output[-40:]))
        return self

    def stop(self) -> None:
        """SIGTERM, and wait for it to exit (a request sent to a dying instance hangs)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process and self.process.stdout:
            self.process.stdout.close()

    def client(self) -> NasClient:
        """A NAS talking to this server."""
        return NasClient(self.auth_port, self.acct_port)


@dataclass
class Answer:
    """An Access-Request's answer: accepted or not, and its attributes by name."""

    accepted: bool
    attributes: dict[str, list] = field(default_factory=dict)

    def first(self, name: str):
        """The first value of an attribute, or None."""
        values = self.attributes.get(name)
        return values[0] if values else None


class NasClient:
    """Sends what a PPPoE concentrator sends: Access-Requests and accounting, from 127.0.0.1."""

    def __init__(self, auth_port: int, acct_port: int, nas_ip: str = "127.0.0.1"):
        self.client = Client(server="127.0.0.1", authport=auth_port, acctport=acct_port, secret=SECRET,
                             dict=Dictionary(str(DICTIONARY)))
        self.client.timeout = 3
        self.client.retries = 1
        self.nas_ip = nas_ip

    def authenticate(self, username: str, password: str, method: str = "pap") -> Answer:
        """Access-Request with PAP or CHAP; the answer's attributes decoded by name."""
        request = self.client.CreateAuthPacket(code=packet.AccessRequest, User_Name=username)
        request["NAS-IP-Address"] = self.nas_ip
        request["Service-Type"] = "Framed-User"
        request["Framed-Protocol"] = "PPP"
        if method == "pap":
            request["User-Password"] = request.PwCrypt(password)
        elif method == "chap":
            challenge = os.urandom(16)
            chap_id = b"\x01"
            request["CHAP-Challenge"] = challenge
            request["CHAP-Password"] = chap_id + hashlib.md5(chap_id + password.encode() + challenge).digest()
        else:
            raise ValueError(method)
        request.add_message_authenticator()
        try:
            reply = self.client.SendPacket(request)
        finally:
            self.client._CloseSocket()  # pyrad leaves it open
        attributes = {key: list(reply[key]) for key in reply.keys() if isinstance(key, str)}  # noqa: SIM118
        return Answer(reply.code == packet.AccessAccept, attributes)

    def account(self, status: str, username: str, session_id: str, *, framed_ip: str | None = None,
                input_octets: int = 0, output_octets: int = 0, session_time: int = 0) -> None:
        """An Accounting-Request (Start, Interim-Update or Stop) for one session."""
        request = self.client.CreateAcctPacket(User_Name=username)
        request["Acct-Status-Type"] = status
        request["Acct-Session-Id"] = session_id
        request["NAS-IP-Address"] = self.nas_ip
        request["NAS-Port-Id"] = "pppoe-1"
        if framed_ip:
            request["Framed-IP-Address"] = framed_ip
        request["Acct-Input-Octets"] = input_octets % 2**32
        request["Acct-Output-Octets"] = output_octets % 2**32
        request["Acct-Input-Gigawords"] = input_octets // 2**32
        request["Acct-Output-Gigawords"] = output_octets // 2**32
        request["Acct-Session-Time"] = session_time
        try:
            reply = self.client.SendPacket(request)
        finally:
            self.client._CloseSocket()
        assert reply.code == packet.AccountingResponse
