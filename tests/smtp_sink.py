"""A real SMTP relay for tests/wizard_api.rs, on aiosmtpd (pip install aiosmtpd).

Usage: python3 tests/smtp_sink.py OUTDIR USER PASSWORD

Listens on 127.0.0.1 on a free port and prints "PORT <n>" once it accepts connections. It
requires AUTH (PLAIN or LOGIN, without TLS: loopback only) with USER/PASSWORD. Recipients
`refused@…` get 550 (a permanent refusal), `busy@…` 451 (try later); any other message is
parsed with Python's own `email` package (independently of the Rust code that wrote it) and
written, before the relay answers 250, as OUTDIR/<n>.eml (the raw message) and OUTDIR/<n>.json:
who authenticated, the envelope, the subject, the MIME structure in walk order, the text and
HTML parts, and every image with its Content-ID and base64 data. It exits when its standard
input closes (the test holding it ended).
"""

import asyncio
import base64
import json
import logging
import pathlib
import sys
import warnings
from email import policy
from email.parser import BytesParser

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, out: pathlib.Path, user: str, password: str):
        self.out = out
        self.user = user.encode()
        self.password = password.encode()
        self.count = 0

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refused@"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if address.startswith("busy@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = BytesParser(policy=policy.default).parsebytes(raw)
        summary = {
            "auth_login": session.auth_data.login.decode() if session.auth_data else "",
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["from"]),
            "to": str(message["to"]),
            "subject": str(message["subject"]),
            "structure": [part.get_content_type() for part in message.walk()],
            "text": None,
            "html": None,
            "images": [],
        }
        for part in message.walk():
            kind = part.get_content_type()
            if kind == "text/plain" and summary["text"] is None:
                summary["text"] = part.get_content()
            elif kind == "text/html" and summary["html"] is None:
                summary["html"] = part.get_content()
            elif kind.startswith("image/"):
                summary["images"].append(
                    {
                        "content_type": kind,
                        "content_id": str(part["content-id"]),
                        "disposition": str(part["content-disposition"]),
                        "data": base64.b64encode(part.get_content()).decode(),
                    }
                )
        n = self.count
        self.count += 1
        (self.out / f"{n}.eml").write_bytes(raw)
        tmp = self.out / f"{n}.json.tmp"
        tmp.write_text(json.dumps(summary))
        tmp.rename(self.out / f"{n}.json")
        return "250 OK"


async def main():
    # AUTH without TLS is the point (loopback only); keep the test output quiet about it.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    sink = Sink(out, sys.argv[2], sys.argv[3])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            sink,
            hostname="test-relay.invalid",
            authenticator=sink.authenticate,
            auth_required=True,
            auth_require_tls=False,
        ),
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
