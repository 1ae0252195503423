"""A local SMTP server for a demo site (./crm mail-sink): it accepts every
email the site sends and keeps it as an .eml file under the site's
`mail/` folder, so a demo can show its follow-up emails without a real
mail server. Production points [email] uri at a real one."""
import email
import email.policy
import logging
import time
from pathlib import Path

from aiosmtpd.controller import Controller

logger = logging.getLogger(__name__)


class MailSink:
    "Writes each accepted message to folder/<time>-<n>.eml."

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = self.folder / f'{time.strftime("%Y%m%d-%H%M%S")}-{self.count}.eml'
        path.write_bytes(envelope.content)
        message = email.message_from_bytes(
            envelope.content, policy=email.policy.default)
        logger.info("email to %s: %s (%s)", ', '.join(envelope.rcpt_tos),
            message['Subject'], path.name)
        return '250 Message accepted'


def serve(folder, host='127.0.0.1', port=8025):
    "Run the sink until interrupted."
    controller = Controller(MailSink(folder), hostname=host, port=port)
    controller.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()
