"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it is sent,
so that the tests read the emails the site sent."""
import email
import email.policy
import socket
import threading

from aiosmtpd.controller import Controller


class MailServer:
    "Keeps every message it accepts; refuses the addresses it is told to."

    def __init__(self):
        self.messages = []
        self.refused = {}   # address -> SMTP answer, e.g. '550 5.1.1 ...'
        self._lock = threading.Lock()
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            self.port = sock.getsockname()[1]
        self._controller = Controller(self, hostname='127.0.0.1',
            port=self.port)

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
            self.messages.append((envelope.rcpt_tos, message))
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
