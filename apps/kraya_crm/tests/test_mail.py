"""Email: building it, sending it to a real local SMTP server (aiosmtpd),
unsubscribe links and inbound email, through real HTTP requests."""
import datetime as dt
import hashlib
import hmac
import socket
import unittest
import urllib.parse
import uuid
from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller

import trytond.config as config
from trytond.modules.company.tests import create_company
from trytond.pool import Pool
from trytond.tests.test_tryton import DB_NAME, RouteTestCase
from trytond.transaction import Transaction

from ..mail import (
    build_email, deliver, html_to_text, new_message_id, text_to_html,
    unsubscribe_url, without_quote)

COMPANY = "Shree Ganesh <Realty> & Co"
INBOUND_SECRET = 'test-inbound-secret'
UNSUBSCRIBE = 'https://crm.example.in/db/crm/unsubscribe/7.abc?x=1&y=2'


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def configure(test, section, **values):
    "Set trytond.conf values for the length of one test."
    if not config.has_section(section):
        config.add_section(section)
    for option, value in values.items():
        test.addCleanup(config.set, section, option,
            config.get(section, option, default=''))
        config.set(section, option, value)


def parse(raw):
    return BytesParser(policy=policy.default).parsebytes(raw)


def email_to(to='Asha <asha@example.in>', text="Hello", html=None,
        message_id='<m1@kraya.example>'):
    return build_email(to, "Your site visit", text, html, message_id,
        UNSUBSCRIBE, from_addr='Kraya CRM <crm@kraya.example>')


class BuildEmailTestCase(unittest.TestCase):

    def parts(self, msg):
        return {part.get_content_type(): part.get_content()
            for part in msg.iter_parts()}

    def test_email_has_text_and_html_alternatives(self):
        msg = email_to(text="Hi Asha,\n\nThe flat is ready.")
        self.assertEqual(msg.get_content_type(), 'multipart/alternative')
        parts = self.parts(msg)
        self.assertIn("The flat is ready.", parts['text/plain'])
        self.assertIn("<p>The flat is ready.</p>", parts['text/html'])

    def test_html_made_from_text_escapes_name_and_keeps_lines(self):
        html = self.parts(email_to(
                text='Hi <b>Asha</b> & "Co",\nline two'))['text/html']
        self.assertIn('Hi &lt;b&gt;Asha&lt;/b&gt; &amp; &quot;Co&quot;,<br>',
            html)
        self.assertNotIn('<b>Asha', html)

    def test_unsubscribe_link_in_both_parts_and_one_click_headers(self):
        msg = email_to()
        parts = self.parts(msg)
        self.assertIn(UNSUBSCRIBE, parts['text/plain'])
        self.assertIn(
            'href="%s"' % UNSUBSCRIBE.replace('&', '&amp;'),
            parts['text/html'])
        self.assertEqual(msg['List-Unsubscribe'], f'<{UNSUBSCRIBE}>')
        self.assertEqual(msg['List-Unsubscribe-Post'],
            'List-Unsubscribe=One-Click')

    def test_given_html_gets_the_footer_before_its_body_ends(self):
        html = self.parts(email_to(
                html='<html><body><h1>Offer</h1></body></html>'))['text/html']
        self.assertRegex(html, r'<h1>Offer</h1><p [^>]*>.*Unsubscribe</a></p>'
            r'</body></html>')

    def test_email_carries_message_id_date_and_default_from(self):
        configure(self, 'email', **{'from': 'Kraya CRM <crm@kraya.example>'})
        msg = build_email('asha@example.in', "Hi", "Hello",
            None, '<m2@kraya.example>', UNSUBSCRIBE)
        self.assertEqual(
            (msg['Message-ID'], msg['From'].addresses[0].addr_spec),
            ('<m2@kraya.example>', 'crm@kraya.example'))
        self.assertIsNotNone(msg['Date'].datetime)

    def test_new_message_id_is_on_the_sending_domain(self):
        configure(self, 'email', **{'from': 'Kraya CRM <crm@kraya.example>'})
        first, second = new_message_id(), new_message_id()
        self.assertRegex(first, r'^<[^<>@\s]+@kraya\.example>$')
        self.assertNotEqual(first, second)


class EmailLinksTestCase(unittest.TestCase):

    def test_web_addresses_become_links_through_the_tracker(self):
        html = text_to_html(
            "Brochure: https://example.in/a?b=1&c=2. Call us <today>!",
            track=lambda url: 'https://crm.example.in/t?u=' + url)
        self.assertIn('<a href="https://crm.example.in/t?u=https://'
            'example.in/a?b=1&amp;c=2">https://example.in/a?b=1&amp;c=2</a>.',
            html)
        self.assertIn('&lt;today&gt;', html)

    def test_text_that_tries_markup_in_an_address_stays_text(self):
        html = text_to_html('https://x.in/"onmouseover="alert(1)')
        self.assertNotIn('onmouseover="', html.split('</a>')[0]
            .split('href=')[1])


class ReadReplyTestCase(unittest.TestCase):

    def test_gmail_quote_wrapped_over_two_lines_is_trimmed(self):
        self.assertEqual(without_quote(
                "Sunday 11 am works.\n\n"
                "On Mon, 1 Dec 2025 at 10:00, Kraya CRM <crm@kraya.example>\n"
                "wrote:\n> Shall we visit the flat?\n"),
            "Sunday 11 am works.")

    def test_outlook_original_message_is_trimmed(self):
        self.assertEqual(without_quote(
                "Call me.\n\n-----Original Message-----\nFrom: Kraya\n"),
            "Call me.")

    def test_only_quoted_text_is_kept_whole(self):
        self.assertEqual(without_quote("> Shall we visit?"),
            "> Shall we visit?")

    def test_html_reply_read_without_blockquote(self):
        self.assertEqual(html_to_text(
                '<div>Yes<br>please</div><blockquote>Old text</blockquote>'),
            "Yes\nplease")


class Mailbox:
    "An SMTP handler that keeps what it gets, or refuses every recipient."

    def __init__(self, refusal=None):
        self.refusal = refusal
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address,
            rcpt_options):
        if self.refusal:
            return self.refusal
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return '250 Message accepted for delivery'


class DeliverTestCase(unittest.TestCase):
    "deliver() against real SMTP servers on 127.0.0.1."

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.servers = {}
        for name, refusal in [('accepting', None),
                ('unknown_user', '550 5.1.1 <nobody@example.in>: '
                    'Recipient address rejected: User unknown'),
                ('greylisting', '451 4.7.1 Greylisted, try again later')]:
            controller = Controller(Mailbox(refusal), hostname='127.0.0.1',
                port=free_port())
            controller.start()
            cls.addClassCleanup(controller.stop)
            cls.servers[name] = controller

    def use(self, name=None):
        port = self.servers[name].port if name else free_port()
        configure(self, 'email', uri=f'smtp://127.0.0.1:{port}')

    def test_accepted_email_is_sent_and_reaches_the_server(self):
        self.use('accepting')
        mailbox = self.servers['accepting'].handler
        mailbox.envelopes.clear()
        result = deliver(email_to(message_id='<sent@kraya.example>'))
        self.assertEqual((result.outcome, result.provider_id),
            ('sent', '<sent@kraya.example>'))
        envelope, = mailbox.envelopes
        self.assertEqual(envelope.rcpt_tos, ['asha@example.in'])
        received = parse(envelope.original_content)
        self.assertEqual(received['Message-ID'], '<sent@kraya.example>')
        self.assertEqual(received['List-Unsubscribe'], f'<{UNSUBSCRIBE}>')

    def test_recipient_refused_with_550_fails_with_the_server_text(self):
        self.use('unknown_user')
        result = deliver(email_to(to='nobody@example.in'))
        self.assertEqual((result.outcome, result.error_code),
            ('failed', 'smtp-550'))
        self.assertIn("User unknown", result.error_message)

    def test_recipient_refused_with_451_is_retried_later(self):
        self.use('greylisting')
        result = deliver(email_to())
        self.assertEqual((result.outcome, result.error_code),
            ('retry', 'smtp-451'))
        self.assertGreater(result.retry_after, 0)

    def test_smtp_server_down_is_retried_later(self):
        self.use(None)
        result = deliver(email_to())
        self.assertEqual((result.outcome, result.error_code),
            ('retry', 'smtp-connection'))
        self.assertGreater(result.retry_after, 0)


def reply(sender, body, message_id, in_reply_to=None, subject="Re: Hello",
        date='Mon, 01 Dec 2025 10:00:00 +0530', extra=()):
    headers = [f'From: {sender}', 'To: Kraya CRM <crm@kraya.example>',
        f'Subject: {subject}', f'Date: {date}', f'Message-ID: {message_id}',
        *extra]
    if in_reply_to:
        headers += [f'In-Reply-To: {in_reply_to}',
            f'References: {in_reply_to}']
    headers += ['MIME-Version: 1.0', 'Content-Type: text/plain; charset=utf-8']
    return ('\r\n'.join(headers) + '\r\n\r\n' + body).encode()


def dsn(original_id, recipient):
    "A delivery status notification as Postfix sends it."
    return f'''From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: crm@kraya.example
Subject: Undelivered Mail Returned to Sender
Date: Mon, 01 Dec 2025 10:05:00 +0000
Message-ID: <bounce-{uuid.uuid4().hex}@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
 boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Mon,  1 Dec 2025 10:04:59 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mail.example.in
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address
    rejected: User unknown in virtual mailbox table

--BOUNDARY
Content-Type: text/rfc822-headers

From: Kraya CRM <crm@kraya.example>
To: {recipient}
Subject: Your site visit
Message-ID: {original_id}

--BOUNDARY--
'''.replace('\n', '\r\n').encode()


class MailRoutesTestCase(RouteTestCase):
    "The unsubscribe page and the inbound email endpoint, over HTTP."
    module = 'kraya_crm'

    @classmethod
    def setUpDatabase(cls):
        Source = Pool().get('crm.source')
        cls.company = create_company(name=COMPANY).id
        if not Source.get_by_code('email'):
            Source.create([{'name': "Email", 'code': 'email'}])

    def setUp(self):
        super().setUp()
        configure(self, 'kraya_crm', link_secret='test-link-secret',
            email_inbound_secret=INBOUND_SECRET,
            public_url='https://crm.example.in')

    def transaction(self):
        return Transaction().start(DB_NAME, 0,
            context={'company': self.company})

    def new_lead(self, name="Asha Kulkarni", sent_id=None):
        """A lead with a unique email address and, given sent_id, an email
        we sent it. Returns (lead id, its address)."""
        address = f'{uuid.uuid4().hex[:12]}@example.in'
        with self.transaction():
            pool = Pool()
            Lead = pool.get('crm.lead')
            Message = pool.get('crm.message')
            lead, = Lead.create([{'name': name, 'email': address}])
            if sent_id:
                Message.create([{'lead': lead.id, 'direction': 'outbound',
                            'channel': 'email', 'kind': 'email',
                            'status': 'sent', 'provider_id': sent_id,
                            'address': address, 'subject': "Hello"}])
            return lead.id, address

    def lead(self, lead_id):
        "The lead's (may be emailed, replied_at, inbound email messages)."
        with self.transaction():
            lead = Pool().get('crm.lead')(lead_id)
            return (lead.may_contact('email'), lead.replied_at,
                [(m.provider_id, m.subject, m.body) for m in lead.messages
                    if m.direction == 'inbound'])

    # Unsubscribe

    def unsubscribe_path(self, lead_id):
        return urllib.parse.urlsplit(unsubscribe_url(DB_NAME, lead_id)).path

    def test_unsubscribe_get_asks_and_does_not_opt_out(self):
        lead_id, _ = self.new_lead()
        response = self.client().get(self.unsubscribe_path(lead_id))
        page = response.get_data(as_text=True)
        self.assertEqual(response.status_code, 200)
        self.assertIn(
            "Stop emails from Shree Ganesh &lt;Realty&gt; &amp; Co?", page)
        self.assertIn('<form method="post">', page)
        self.assertTrue(self.lead(lead_id)[0])

    def test_unsubscribe_button_post_opts_out_of_email(self):
        lead_id, _ = self.new_lead()
        response = self.client().post(self.unsubscribe_path(lead_id))
        self.assertEqual(response.status_code, 200)
        self.assertIn("You are unsubscribed", response.get_data(as_text=True))
        self.assertFalse(self.lead(lead_id)[0])

    def test_one_click_post_opts_out_of_email(self):
        lead_id, _ = self.new_lead()
        response = self.client().post(self.unsubscribe_path(lead_id),
            data='List-Unsubscribe=One-Click',
            content_type='application/x-www-form-urlencoded')
        self.assertEqual(response.status_code, 200)
        self.assertFalse(self.lead(lead_id)[0])

    def test_oversized_unsubscribe_post_is_413_and_opts_out_nobody(self):
        lead_id, _ = self.new_lead()
        response = self.client().post(self.unsubscribe_path(lead_id),
            data='x' * 10_000, content_type='text/plain')
        self.assertEqual(response.status_code, 413)
        self.assertTrue(self.lead(lead_id)[0])

    def test_forged_unsubscribe_token_is_404_and_opts_out_nobody(self):
        lead_id, _ = self.new_lead()
        path = self.unsubscribe_path(lead_id)
        forged = path[:-4] + ('AAAA' if not path.endswith('AAAA') else 'BBBB')
        response = self.client().post(forged)
        self.assertEqual(response.status_code, 404)
        self.assertIn("Link not found", response.get_data(as_text=True))
        self.assertTrue(self.lead(lead_id)[0])

    # Inbound email

    def post_email(self, body, signature=None, sign=True):
        headers = {}
        if sign:
            headers['X-Kraya-Signature'] = signature or 'sha256=' + hmac.new(
                INBOUND_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return self.client().post(f'/{DB_NAME}/crm/email/inbound',
            data=body, headers=headers, content_type='message/rfc822')

    def test_unsigned_inbound_email_is_401(self):
        response = self.post_email(reply('a@example.in', "Hi", '<u@x>'),
            sign=False)
        self.assertEqual(response.status_code, 401)

    def test_badly_signed_inbound_email_is_403(self):
        body = reply('a@example.in', "Hi", '<b@x>')
        response = self.post_email(body, signature='sha256=' + hmac.new(
                b'wrong-secret', body, hashlib.sha256).hexdigest())
        self.assertEqual(response.status_code, 403)

    def test_reply_lands_on_the_lead_it_answers_and_marks_it_replied(self):
        other_id, _ = self.new_lead(sent_id=f'<{uuid.uuid4()}@kraya.example>')
        sent_id = f'<{uuid.uuid4()}@kraya.example>'
        lead_id, _ = self.new_lead("Ravi Iyer", sent_id=sent_id)
        reply_id = f'<{uuid.uuid4()}@mail.gmail.com>'
        # From another address than the lead's: the thread decides.
        response = self.post_email(reply(
                'Ravi <ravi.office@gmail.com>',
                "Sunday 11 am works.\r\n\r\nOn Mon, 1 Dec 2025 at 09:00, "
                "Kraya CRM <crm@kraya.example> wrote:\r\n> Hello\r\n",
                reply_id, in_reply_to=sent_id))
        self.assertEqual(response.status_code, 200)
        _, replied_at, inbound = self.lead(lead_id)
        self.assertEqual(inbound,
            [(reply_id, "Re: Hello", "Sunday 11 am works.")])
        self.assertEqual(replied_at, dt.datetime(2025, 12, 1, 4, 30))
        self.assertEqual(self.lead(other_id)[1:], (None, []))

    def test_out_of_office_reply_is_stored_but_not_a_reply(self):
        sent_id = f'<{uuid.uuid4()}@kraya.example>'
        lead_id, address = self.new_lead(sent_id=sent_id)
        self.post_email(reply(address, "I am away until Monday.",
                f'<{uuid.uuid4()}@example.in>', in_reply_to=sent_id,
                extra=['Auto-Submitted: auto-replied']))
        _, replied_at, inbound = self.lead(lead_id)
        self.assertEqual((replied_at, [b for _, _, b in inbound]),
            (None, ["I am away until Monday."]))

    def test_same_reply_delivered_twice_is_stored_once(self):
        sent_id = f'<{uuid.uuid4()}@kraya.example>'
        lead_id, address = self.new_lead(sent_id=sent_id)
        body = reply(address, "Yes", f'<{uuid.uuid4()}@example.in>',
            in_reply_to=sent_id)
        statuses = [self.post_email(body).status_code for _ in range(2)]
        self.assertEqual(statuses, [200, 200])
        self.assertEqual(len(self.lead(lead_id)[2]), 1)

    def test_reply_from_unknown_address_creates_an_email_lead(self):
        address = f'{uuid.uuid4().hex[:12]}@example.in'
        reply_id = f'<{uuid.uuid4()}@example.in>'
        response = self.post_email(reply(
                f'Neha Gupta <{address.upper()}>', "Is the 2BHK available?",
                reply_id, subject="2BHK in Thane"))
        self.assertEqual(response.status_code, 200)
        with self.transaction():
            lead, = Pool().get('crm.lead').search([('email', '=', address)])
            self.assertEqual((lead.name, lead.source.code),
                ("Neha Gupta", 'email'))
            self.assertEqual([(m.provider_id, m.channel, m.body)
                    for m in lead.messages],
                [(reply_id, 'email', "Is the 2BHK available?")])

    def test_bounce_marks_the_returned_email_failed_with_its_status(self):
        sent_id = f'<{uuid.uuid4()}@kraya.example>'
        _, address = self.new_lead(sent_id=sent_id)
        response = self.post_email(dsn(sent_id, address))
        self.assertEqual(response.status_code, 200)
        with self.transaction():
            message, = Pool().get('crm.message').search(
                [('provider_id', '=', sent_id)])
            self.assertEqual((message.status, message.error_code),
                ('failed', '5.1.1'))
            self.assertIn("User unknown", message.error_message)

    def test_body_that_is_not_an_email_is_400_and_kept(self):
        body = f'{{"not": "an email {uuid.uuid4()}"}}'.encode()
        response = self.post_email(body)
        self.assertEqual(response.status_code, 400)
        with self.transaction():
            letter, = Pool().get('crm.dead_letter').search(
                [('body', '=', body.decode())])
            self.assertEqual(letter.endpoint, 'email')
