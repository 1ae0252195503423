"""The WhatsApp client against the Cloud API simulator, over real HTTP, with
the simulator's webhooks landing on a real local receiver."""
import hashlib
import hmac
import json
import threading
import time
import unittest
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kraya_crm.whatsapp_client import GraphError, WhatsAppClient
from kraya_peers.whatsapp import Simulator

SECRET = 'test-app-secret'
TOKEN = 'test-access-token'
NUMBER_ID = '100000000000099'
WABA_ID = '100000000000098'
PDF = b'%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n'
PNG = b'\x89PNG\r\n\x1a\n' + b'\x00' * 64
LEAD, LEAD_ID = '+91 98765 43210', '919876543210'
OTHER, OTHER_ID = '+919812345678', '919812345678'


class WebhookReceiver:
    "Our end of the webhook: keeps each body and whether its signature held."

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers['Content-Length']))
                expected = 'sha256=' + hmac.new(
                    SECRET.encode(), body, hashlib.sha256).hexdigest()
                header = self.headers.get('X-Hub-Signature-256', '')
                signed = hmac.compare_digest(header, expected)
                received.append((signed, body, header))
                self.send_response(200 if signed else 403)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = (f'http://127.0.0.1:{self.server.server_address[1]}'
            '/default/crm/whatsapp/webhook')
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def values(self, key):
        "The statuses or messages of every body received, in order."
        return [item for _, body, _ in list(self.received)
            for entry in json.loads(body)['entry']
            for change in entry['changes']
            for item in change['value'].get(key, [])]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def wait_for(find, timeout=5):
    "What find() returns once it is truthy."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f'nothing found within {timeout} s')


class WhatsAppClientTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.receiver = WebhookReceiver()
        cls.addClassCleanup(cls.receiver.stop)
        cls.sim = Simulator(webhook_url=cls.receiver.url, app_secret=SECRET,
            access_token=TOKEN, phone_number_id=NUMBER_ID, waba_id=WABA_ID,
            status_delay=0.02)
        cls.sim.start()
        cls.addClassCleanup(cls.sim.stop)

    def setUp(self):
        self.sim.reset()
        self.receiver.received.clear()
        self.client = self.make_client()

    def make_client(self, url=None, token=TOKEN, **kwargs):
        return WhatsAppClient(
            url or self.sim.url, 'v21.0', NUMBER_ID, token, **kwargs)

    def statuses_of(self, wamid, count):
        return wait_for(lambda: (lambda found: len(found) >= count and found)(
                [s for s in self.receiver.values('statuses')
                    if s['id'] == wamid]))

    def control(self, path, data=None):
        "GET (no data) or POST JSON to the simulator's /_sim/ endpoints."
        request = urllib.request.Request(self.sim.url + '/_sim/' + path,
            data=None if data is None else json.dumps(data).encode())
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def test_text_send_is_the_cloud_api_body_and_returns_a_wamid(self):
        self.sim.open_window(LEAD)
        result = self.client.send_text(LEAD, "Namaste", callback_data='out-7')
        self.assertEqual(result.outcome, 'sent')
        self.assertTrue(result.provider_id.startswith('wamid.'))
        sent, = self.sim.sent
        self.assertEqual(sent['wamid'], result.provider_id)
        self.assertEqual(sent['body'], {
                'messaging_product': 'whatsapp',
                'recipient_type': 'individual',
                'to': LEAD_ID,
                'type': 'text',
                'text': {'body': "Namaste", 'preview_url': False},
                'biz_opaque_callback_data': 'out-7',
                })

    def test_template_send_is_the_cloud_api_body(self):
        with_parameters = self.client.send_template(
            LEAD, 'site_visit', 'en', ["Asha", "5 PM"])
        without = self.client.send_template(OTHER, 'hello', 'hi')
        self.assertEqual((with_parameters.outcome, without.outcome),
            ('sent', 'sent'))
        self.assertEqual([s['body'] for s in self.sim.sent], [{
                    'messaging_product': 'whatsapp',
                    'recipient_type': 'individual',
                    'to': LEAD_ID,
                    'type': 'template',
                    'template': {'name': 'site_visit',
                        'language': {'code': 'en'},
                        'components': [{'type': 'body', 'parameters': [
                                    {'type': 'text', 'text': "Asha"},
                                    {'type': 'text', 'text': "5 PM"}]}]},
                    }, {
                    'messaging_product': 'whatsapp',
                    'recipient_type': 'individual',
                    'to': OTHER_ID,
                    'type': 'template',
                    'template': {'name': 'hello', 'language': {'code': 'hi'}},
                    }])

    def test_wrong_token_fails_with_code_190(self):
        result = self.make_client(token='stolen').send_template(
            LEAD, 'hello', 'en')
        self.assertEqual((result.outcome, result.error_code, result.provider_id),
            ('failed', '190', None))
        self.assertEqual(self.sim.sent, [])

    def test_bad_request_is_answered_with_graph_error_100(self):
        request = urllib.request.Request(self.client.messages_url,
            data=json.dumps({'messaging_product': 'whatsapp', 'to': LEAD_ID,
                    'type': 'text'}).encode(),
            headers={'Authorization': f'Bearer {TOKEN}'})
        with self.assertRaises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=5)
        error = json.loads(raised.exception.read())['error']
        self.assertEqual(raised.exception.code, 400)
        self.assertEqual((error['code'], error['type'],
                error['error_data']['messaging_product']),
            (100, 'OAuthException', 'whatsapp'))
        self.assertIn("text['body']", error['error_data']['details'])
        self.assertTrue(error['fbtrace_id'])

    def test_text_outside_the_window_needs_reengagement_until_a_reply(self):
        closed = self.client.send_text(LEAD, "Still interested?")
        self.assertEqual((closed.outcome, closed.error_code),
            ('reengage', '131047'))
        self.assertIn("24 hours", closed.error_message)
        self.sim.reply(LEAD, "Is the flat available?", name="Asha")
        inbound, = wait_for(lambda: [
                m for m in self.receiver.values('messages')
                if m['from'] == LEAD_ID])
        self.assertEqual((inbound['from'], inbound['type'], inbound['text']),
            (LEAD_ID, 'text', {'body': "Is the flat available?"}))
        self.assertIn({'profile': {'name': "Asha"}, 'wa_id': LEAD_ID},
            self.receiver.values('contacts'))
        self.assertEqual(
            self.client.send_text(LEAD, "Yes, it is").outcome, 'sent')

    def test_pair_rate_limit_is_retry_with_retry_after(self):
        self.assertEqual(
            self.client.send_template(LEAD, 'hello', 'en').outcome, 'sent')
        again = self.client.send_template(LEAD, 'hello', 'en')
        self.assertEqual((again.outcome, again.error_code, again.retry_after),
            ('retry', '131056', 6))
        self.sim.configure(pair_interval=0.2)
        time.sleep(0.25)
        self.assertEqual(
            self.client.send_template(LEAD, 'hello', 'en').outcome, 'sent')

    def test_token_bucket_keeps_a_burst_under_the_throughput_limit(self):
        def burst(client):
            with ThreadPoolExecutor(8) as pool:
                return list(pool.map(lambda i: client.send_template(
                            f'+91980000{i:04d}', 'hello', 'en'), range(40)))

        self.sim.configure(throughput=20)
        unpaced = burst(self.make_client(throughput=1000))
        # The simulator does refuse a burst over its limit...
        self.assertIn('130429', {r.error_code for r in unpaced})
        self.sim.reset()
        self.sim.configure(throughput=20)
        start = time.monotonic()
        paced = burst(self.make_client(throughput=20))
        # ...and the client's bucket makes the same burst wait instead.
        self.assertEqual([r.outcome for r in paced], ['sent'] * 40)
        self.assertGreater(time.monotonic() - start, 1.5)

    def test_not_on_whatsapp_is_invalid_number(self):
        self.sim.configure(not_on_whatsapp=[LEAD])
        result = self.client.send_template(LEAD, 'hello', 'en')
        self.assertEqual((result.outcome, result.error_code),
            ('invalid_number', '131026'))

    def test_answered_failures_are_classified_by_code(self):
        for number, (code, outcome) in enumerate([(132001, 'failed'),
                    (131049, 'retry'), (131048, 'retry'), (80007, 'retry'),
                    (131000, 'retry'), (131050, 'marketing_opt_out'),
                    (131009, 'failed')]):
            with self.subTest(code=code):
                to = f'+9198100{number:05d}'
                self.sim.fail(to, code)
                result = self.client.send_template(to, 'hello', 'en')
                self.assertEqual((result.outcome, result.error_code),
                    (outcome, str(code)))
                self.assertEqual(result.retry_after is not None,
                    outcome == 'retry')

    def test_refused_connection_is_retry(self):
        stopped = Simulator(access_token=TOKEN, phone_number_id=NUMBER_ID)
        stopped.start()
        stopped.stop()
        result = self.make_client(stopped.url).send_template(
            LEAD, 'hello', 'en')
        self.assertEqual((result.outcome, result.error_code),
            ('retry', 'network'))
        self.assertGreater(result.retry_after, 0)

    def test_lost_answer_is_retry_though_the_message_went(self):
        self.sim.configure(response_delay=0.5)
        result = self.make_client(timeout=0.2).send_template(
            LEAD, 'hello', 'en', callback_data='out-9')
        self.assertEqual((result.outcome, result.error_code),
            ('retry', 'network'))
        # The outbox finds it again by its callback data in the statuses.
        sent, = self.sim.sent
        status = self.statuses_of(sent['wamid'], 1)[0]
        self.assertEqual(status['biz_opaque_callback_data'], 'out-9')

    def test_statuses_arrive_signed_in_order_with_callback_data(self):
        result = self.client.send_template(
            LEAD, 'hello', 'en', callback_data='out-42')
        statuses = self.statuses_of(result.provider_id, 3)
        self.assertEqual([s['status'] for s in statuses],
            ['sent', 'delivered', 'read'])
        self.assertEqual({(s['recipient_id'], s['biz_opaque_callback_data'])
                for s in statuses}, {(LEAD_ID, 'out-42')})
        self.assertTrue(all(signed for signed, *_ in self.receiver.received))
        body = json.loads(self.receiver.received[-1][1])
        self.assertEqual((body['object'], body['entry'][0]['changes'][0]
                ['value']['metadata']['phone_number_id']),
            ('whatsapp_business_account', NUMBER_ID))

    def test_crm_webhook_reads_the_simulators_statuses(self):
        from kraya_crm.whatsapp import Delivery, signature_valid
        result = self.client.send_template(LEAD, 'hello', 'en')
        self.statuses_of(result.provider_id, 3)
        received = list(self.receiver.received)
        self.assertTrue(all(signature_valid(body, header, SECRET)
                for _, body, header in received))
        read = Delivery.combine(Delivery.from_payload(json.loads(body))
            for _, body, _ in received)
        self.assertEqual([status for wamid, status, *_ in read.statuses
                if wamid == result.provider_id], ['sent', 'delivered', 'read'])

    def test_asynchronous_failure_is_a_failed_status_with_its_code(self):
        self.sim.fail(LEAD, 131049, asynchronous=True)
        result = self.client.send_template(LEAD, 'offer', 'en')
        self.assertEqual(result.outcome, 'sent')
        failed, = self.statuses_of(result.provider_id, 1)
        self.assertEqual((failed['status'], failed['errors'][0]['code']),
            ('failed', 131049))
        # No sent, delivered or read follow: the simulator posts webhooks
        # one by one as they fall due, so once a later send has been read,
        # any status of the failed message would have arrived before.
        later = self.client.send_template(OTHER, 'hello', 'en')
        self.statuses_of(later.provider_id, 3)
        self.assertEqual([s['status'] for s in self.receiver.values('statuses')
                if s['id'] == result.provider_id], ['failed'])

    def test_control_endpoints_work_over_http(self):
        self.assertTrue(self.control('health')['ok'])
        settings = self.control('settings', {'not_on_whatsapp': [OTHER]})
        self.assertEqual(settings['not_on_whatsapp'], [OTHER_ID])
        self.assertTrue(self.control('reply', {
                    'from': LEAD, 'name': "Asha", 'text': "Hi"})['wamid'])
        self.control('fail', {'to': LEAD, 'code': 131026})
        self.assertEqual(self.client.send_text(LEAD, "Hello").outcome,
            'invalid_number')
        self.assertEqual(self.client.send_text(LEAD, "Hello").outcome, 'sent')
        self.assertEqual(self.client.send_template(OTHER, 'hello', 'en')
            .error_code, '131026')
        message, = self.control('messages')
        self.assertEqual((message['to'], message['type'], message['text']),
            (LEAD_ID, 'text', "Hello"))
        self.control('window', {'number': LEAD, 'open': False})
        self.control('settings', {'pair_interval': 0})
        self.assertEqual(self.client.send_text(LEAD, "Again").outcome,
            'reengage')
        self.control('reset', {})
        self.assertEqual(self.control('messages'), [])
        with self.assertRaises(urllib.error.HTTPError) as raised:
            self.control('settings', {'unknown': 1})
        self.assertEqual(raised.exception.code, 400)

    def test_uploaded_pdf_is_sent_by_id_and_reaches_the_lead(self):
        self.sim.open_window(LEAD)
        media_id = self.client.upload_media(
            PDF, 'application/pdf', 'Powai brochure.pdf')
        result = self.client.send_media(LEAD, 'document', media_id,
            caption="The brochure", filename='Powai brochure.pdf')
        self.assertEqual(result.outcome, 'sent')
        sent, = self.sim.sent
        self.assertEqual(sent['body']['document'], {'id': media_id,
                'caption': "The brochure", 'filename': 'Powai brochure.pdf'})
        self.assertEqual(
            {k: sent['media'][k] for k in ['filename', 'mime_type', 'size']},
            {'filename': 'Powai brochure.pdf', 'mime_type': 'application/pdf',
                'size': len(PDF)})

    def test_upload_of_a_type_whatsapp_refuses_is_error_100(self):
        with self.assertRaises(GraphError) as raised:
            self.client.upload_media(b'GIF89a', 'image/gif', 'smile.gif')
        self.assertEqual((raised.exception.code, raised.exception.retry),
            ('100', False))
        self.assertIn("image/gif", raised.exception.message)

    def test_send_of_an_unknown_media_id_is_refused(self):
        self.sim.open_window(LEAD)
        result = self.client.send_media(LEAD, 'image', '404404404')
        self.assertEqual((result.outcome, result.error_code),
            ('failed', '131053'))

    def test_template_with_a_document_header_carries_the_upload(self):
        self.sim.set_templates([{'name': 'brochure', 'language': 'en',
                    'header': 'DOCUMENT', 'body': "Hi {{1}}"}])
        media_id = self.client.upload_media(PDF, 'application/pdf', 'b.pdf')
        result = self.client.send_template(LEAD, 'brochure', 'en', ["Asha"],
            header={'type': 'document', 'id': media_id, 'filename': 'b.pdf'})
        self.assertEqual(result.outcome, 'sent')
        sent, = self.sim.sent
        self.assertEqual((sent['template']['parameters'],
                sent['media']['filename'], sent['media']['size']),
            (["Asha"], 'b.pdf', len(PDF)))

    def test_unknown_or_unapproved_template_is_132001(self):
        self.sim.set_templates([{'name': 'diwali', 'status': 'PENDING',
                    'category': 'MARKETING', 'body': "Offer"}])
        for name in ['diwali', 'no_such_template']:
            with self.subTest(name=name):
                result = self.client.send_template(OTHER, name, 'en')
                self.assertEqual((result.outcome, result.error_code),
                    ('failed', '132001'))

    def test_reply_quotes_the_message_it_answers(self):
        wamid = self.sim.reply(LEAD, "Price?")['wamid']
        result = self.client.send_text(LEAD, "45 lakh", reply_to=wamid)
        self.assertEqual(result.outcome, 'sent')
        sent, = self.sim.sent
        self.assertEqual((sent['reply_to'], sent['body']['context']),
            (wamid, {'message_id': wamid}))

    def test_reply_buttons_are_an_interactive_button_message(self):
        self.sim.open_window(LEAD)
        result = self.client.send_buttons(LEAD, "When can you visit?",
            ["Saturday", "Sunday", "Call me"])
        self.assertEqual(result.outcome, 'sent')
        sent, = self.sim.sent
        self.assertEqual((sent['type'], sent['text'], sent['buttons']),
            ('interactive', "When can you visit?",
                ["Saturday", "Sunday", "Call me"]))

    def test_four_buttons_or_a_long_title_are_refused_131009(self):
        self.sim.open_window(LEAD)
        for titles in [["A", "B", "C", "D"], ["A title of 21 letters"]]:
            with self.subTest(titles=titles):
                result = self.client.send_buttons(LEAD, "Pick", titles)
                self.assertEqual((result.outcome, result.error_code),
                    ('failed', '131009'))
        self.assertEqual(self.sim.sent, [])

    def test_mark_read_reaches_the_simulator_for_a_lead_message(self):
        wamid = self.sim.reply(LEAD, "Hello")['wamid']
        self.client.mark_read(wamid)
        self.assertEqual(self.sim.reads, [wamid])
        with self.assertRaises(GraphError) as raised:
            self.client.mark_read('wamid.NOT-THEIRS')
        self.assertEqual(raised.exception.code, '100')

    def test_media_a_lead_sends_is_downloaded_with_the_token(self):
        media_id = self.sim.reply(LEAD, media={'image': {
                        'mime_type': 'image/png', 'data': PNG,
                        'caption': "Plot"}})['media_id']
        inbound, = wait_for(lambda: self.receiver.values('messages'))
        self.assertEqual((inbound['type'], inbound['image']['id'],
                inbound['image']['caption']), ('image', media_id, "Plot"))
        downloaded = self.client.download_media(media_id)
        self.assertEqual((downloaded.data, downloaded.mime_type,
                downloaded.file_size), (PNG, 'image/png', len(PNG)))
        with self.assertRaises(GraphError) as raised:
            self.make_client(token='stolen').download_media(media_id)
        self.assertEqual(raised.exception.code, '190')

    def test_expired_media_is_not_worth_a_retry_a_failing_one_is(self):
        media_id = self.sim.reply(LEAD, media={'document': {
                        'mime_type': 'application/pdf', 'data': PDF,
                        'filename': 'kyc.pdf'}})['media_id']
        self.sim.fail_media(media_id, 1)
        with self.assertRaises(GraphError) as failing:
            self.client.download_media(media_id)
        self.assertTrue(failing.exception.retry)
        self.assertEqual(self.client.download_media(media_id).data, PDF)
        self.sim.expire_media(media_id)
        with self.assertRaises(GraphError) as expired:
            self.client.download_media(media_id)
        self.assertEqual((expired.exception.code, expired.exception.retry),
            ('100', False))

    def test_templates_are_read_page_after_page(self):
        self.sim.set_templates([{'name': f't{i}', 'body': "Hi {{1}}"}
                for i in range(7)], replace=True)
        names = [t['name']
            for t in self.client.templates(WABA_ID, limit=3)]
        self.assertEqual(names, [f't{i}' for i in range(7)])
        with self.assertRaises(GraphError):
            list(self.client.templates('999'))

    def test_marketing_opt_out_and_button_reach_the_webhook(self):
        self.control('preferences', {'from': LEAD, 'value': 'stop'})
        self.control('reply', {'from': LEAD,
                'button': {'text': "Stop promotions"}})
        preference, = wait_for(
            lambda: self.receiver.values('user_preferences'))
        self.assertEqual({k: preference[k] for k in
                ['wa_id', 'category', 'value']},
            {'wa_id': LEAD_ID, 'category': 'marketing_messages',
                'value': 'stop'})
        button, = wait_for(lambda: self.receiver.values('messages'))
        self.assertEqual(button['button']['text'], "Stop promotions")
