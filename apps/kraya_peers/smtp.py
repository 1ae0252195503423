"""A real SMTP server on 127.0.0.1 (aiosmtpd), the one stand-in for a mail
server: the demo's mail sink (./crm mail-sink files every email under the
site's mail/ folder), the tests' (they read what the site sent, and make
addresses bounce) and the benchmarks' (it keeps nothing)."""
import email
import email.policy
import logging
import socket
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller

logger = logging.getLogger(__name__)


class SmtpSink:
    """Accepts every email, except to the addresses in `refused` (address
    -> SMTP answer, e.g. '550 5.1.1 No such user'). With `keep`, holds them
    for sent_to(); with a `folder`, writes each there as <time>-<n>.eml."""

    def __init__(self, port=0, folder=None, keep=True, host='127.0.0.1'):
        if not port:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
        self.host, self.port = host, port
        self.folder = Path(folder) if folder else None
        self.keep = keep
        self.refused = {}
        self.messages = []   # (recipients, email.message.EmailMessage)
        self.count = 0
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname=host, port=port)

    @property
    def uri(self):
        return f'smtp://{self.host}:{self.port}'

    async def handle_RCPT(self, server, session, envelope, address,
            rcpt_options):
        answer = self.refused.get(address.lower())
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(
            envelope.content, policy=email.policy.default)
        with self._lock:
            self.count += 1
            number = self.count
            if self.keep:
                self.messages.append((envelope.rcpt_tos, message))
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / (
                f'{time.strftime("%Y%m%d-%H%M%S")}-{number}.eml')
            path.write_bytes(envelope.content)
            logger.info("email to %s: %s (%s)",
                ', '.join(envelope.rcpt_tos), message['Subject'], path.name)
        return '250 Message accepted'

    def sent_to(self, address):
        "The messages accepted for this address, oldest first."
        with self._lock:
            return [m for rcpt, m in self.messages
                if address.lower() in (r.lower() for r in rcpt)]

    def start(self):
        self._controller.start()
        return self

    def stop(self):
        self._controller.stop()

    def serve_forever(self):
        "Run until interrupted (./crm mail-sink)."
        self.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()
