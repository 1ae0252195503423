"""WhatsApp media, reply buttons, quoted replies, read receipts, the
template catalogue and marketing opt-outs, in the database, against the
Cloud API simulator over HTTP."""
import datetime as dt
import json
import time
import unittest

import trytond.config as config
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from kraya_peers.whatsapp import Simulator

from .. import outbox
from ..exceptions import ButtonsError, MediaError, TemplateSyncError
from ..media import check_upload
from ..message import utcnow
from .test_sequence import make_sequence, run, whatsapp_lead

TOKEN = 'module-test-token'
NUMBER_ID = '100000000000077'
WABA_ID = '100000000000076'
LEAD_ID = '919876543210'
PDF = b'%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n'
PNG = b'\x89PNG\r\n\x1a\n' + b'\x01' * 48
MB = 1024 * 1024


class CheckUploadTestCase(unittest.TestCase):
    "The refusals are messages of the database, in the user's language."

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    def test_kinds_whatsapp_takes(self):
        self.assertEqual([check_upload(*f) for f in [
                    ('plan.jpg', 'image/jpeg', 4 * MB),
                    ('brochure.pdf', 'application/pdf', 99 * MB),
                    ('price list.xlsx', None, 1000),
                    ('note.ogg', 'audio/ogg; codecs=opus', 1000),
                    ('walkthrough.mp4', 'video/mp4', 15 * MB)]],
            ['image', 'document', 'document', 'audio', 'video'])

    @with_transaction()
    def test_a_type_whatsapp_refuses_names_what_it_takes(self):
        with self.assertRaises(MediaError) as raised:
            check_upload('floor-plan.heic', 'image/heic', 2 * MB)
        self.assertIn("floor-plan.heic is not a type WhatsApp takes "
            "(image: JPEG, PNG; document: PDF, Word, Excel, PowerPoint, "
            "text", raised.exception.message)

    @with_transaction()
    def test_a_file_over_the_limit_names_the_limit(self):
        with self.assertRaises(MediaError) as raised:
            check_upload('brochure.pdf', 'application/pdf', 120 * MB)
        self.assertEqual(raised.exception.message,
            "brochure.pdf is 120 MB; WhatsApp takes documents up to 100 MB")
        with self.assertRaises(MediaError) as raised:
            check_upload('site.png', 'image/png', 6 * MB)
        self.assertEqual(raised.exception.message,
            "site.png is 6 MB; WhatsApp takes images up to 5 MB")

    @with_transaction()
    def test_stickers_only_come_in(self):
        with self.assertRaises(MediaError):
            check_upload('smile.webp', 'image/webp', 50 * 1024)


class WhatsAppMediaTestCase(unittest.TestCase):
    "Each test talks to a fresh simulator; the worker's tasks run inline."

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')
        cls.sim = Simulator(access_token=TOKEN, phone_number_id=NUMBER_ID,
            waba_id=WABA_ID, pair_interval=0, statuses=[])
        cls.sim.start()
        cls.addClassCleanup(cls.sim.stop)

    def setUp(self):
        self.sim.reset()
        if not config.has_section('kraya_crm'):
            config.add_section('kraya_crm')
        for option, value in {'whatsapp_api_url': self.sim.url,
                'whatsapp_phone_number_id': NUMBER_ID,
                'whatsapp_access_token': TOKEN,
                'whatsapp_business_account_id': WABA_ID}.items():
            self.addCleanup(config.set, 'kraya_crm', option,
                config.get('kraya_crm', option, default=''))
            config.set('kraya_crm', option, value)
        # The outbox keeps one client a process: this one is the simulator.
        self.addCleanup(setattr, outbox, '_whatsapp_client', None)
        outbox._whatsapp_client = None

    def outbound(self, lead, **values):
        "A queued WhatsApp message to the lead, as the inbox makes one."
        Message = Pool().get('crm.message')
        message, = Message.create([{'lead': lead.id, 'direction': 'outbound',
                    'channel': 'whatsapp', 'status': 'queued',
                    'kind': 'text', 'address': lead.whatsapp_number,
                    **values}])
        return message

    def deliver(self, message):
        "One send by the outbox, as the worker does after its claim."
        Message = Pool().get('crm.message')
        Message.write([message], {'status': 'sending',
                'attempts': message.attempts + 1})
        message = Message(message.id)
        Message.write([message], message._deliver())
        return Message(message.id)

    def talking_lead(self, **values):
        "A lead who wrote to us a minute ago (the 24-hour window is open)."
        Lead = Pool().get('crm.lead')
        lead = whatsapp_lead(**values)
        Lead.write([lead], {'last_inbound_at': utcnow()})
        self.sim.open_window(lead.whatsapp_number)
        return Lead(lead.id)

    def attachment(self, lead, name, data):
        Attachment = Pool().get('ir.attachment')
        attachment, = Attachment.create([{'name': name, 'type': 'data',
                    'data': data, 'resource': str(lead)}])
        return attachment

    def sent_to(self, lead):
        return [m for m in self.sim.sent
            if m['to'] == lead.whatsapp_number.lstrip('+')]

    def receive(self, *values):
        "Webhook deliveries, written as the worker writes them."
        WhatsApp = Pool().get('crm.whatsapp.webhook')
        from ..whatsapp import Delivery
        WhatsApp.process(Delivery.combine(
                [Delivery.from_payload(self.envelope(v)) for v in values]))

    @staticmethod
    def envelope(value, field='messages'):
        return {'object': 'whatsapp_business_account', 'entry': [{
                    'id': WABA_ID, 'changes': [{'field': field,
                            'value': {'messaging_product': 'whatsapp',
                                **value}}]}]}

    def sync_catalogue(self, templates):
        Template = Pool().get('crm.whatsapp.template')
        self.sim.set_templates(templates, replace=True)
        Template.sync()
        return {t.name: t for t in Template.search([])}

    @with_transaction()
    def test_uploaded_pdf_reaches_the_leads_phone_with_its_caption(self):
        with set_company(create_company()):
            lead = self.talking_lead()
            message = self.outbound(lead, kind='document',
                body="Our Powai brochure",
                media=self.attachment(lead, 'Powai brochure.pdf', PDF).id)
            message = self.deliver(message)
            self.assertEqual(message.status, 'sent')
            sent, = self.sent_to(lead)
            self.assertEqual((sent['type'], sent['media']['filename'],
                    sent['media']['mime_type'], sent['media']['size'],
                    sent['media']['caption']),
                ('document', 'Powai brochure.pdf', 'application/pdf',
                    len(PDF), "Our Powai brochure"))
            self.assertEqual(message.media_id, sent['media']['id'])

    @with_transaction()
    def test_reply_quotes_the_leads_message(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            lead = self.talking_lead()
            wamid = self.sim.reply(lead.whatsapp_number, "Price?")['wamid']
            theirs, = Message.create([{'lead': lead.id,
                        'direction': 'inbound', 'channel': 'whatsapp',
                        'status': 'received', 'provider_id': wamid}])
            self.deliver(self.outbound(lead, body="45 lakh",
                    reply_to=theirs.id))
            sent, = self.sent_to(lead)
            self.assertEqual(sent['reply_to'], wamid)

    @with_transaction()
    def test_buttons_go_as_interactive_reply_buttons(self):
        with set_company(create_company()):
            lead = self.talking_lead()
            self.deliver(self.outbound(lead, kind='buttons',
                    body="When can you visit?",
                    buttons=json.dumps(["Saturday", "Sunday"])))
            sent, = self.sent_to(lead)
            self.assertEqual((sent['type'], sent['buttons']),
                ('interactive', ["Saturday", "Sunday"]))

    @with_transaction()
    def test_four_buttons_or_a_long_title_are_refused_before_sending(self):
        with set_company(create_company()):
            lead = self.talking_lead()
            for titles, text in [(["A", "B", "C", "D"], "at most 3"),
                    (["Book a site visit now"], "at most 20")]:
                with self.subTest(titles=titles), \
                        self.assertRaises(ButtonsError) as raised:
                    self.outbound(lead, kind='buttons', body="Pick",
                        buttons=json.dumps(titles))
                self.assertIn(text, raised.exception.message)
        self.assertEqual(self.sim.sent, [])

    @with_transaction()
    def test_read_receipt_of_the_latest_message_reaches_whatsapp(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            lead = self.talking_lead()
            wamids = [self.sim.reply(lead.whatsapp_number, text)['wamid']
                for text in ["Hi", "Price?"]]
            now = utcnow()
            messages = Message.create([{'lead': lead.id,
                        'direction': 'inbound', 'channel': 'whatsapp',
                        'status': 'received', 'provider_id': wamid,
                        'at': now + dt.timedelta(seconds=i)}
                    for i, wamid in enumerate(wamids)])
            # What the queued task runs in the worker:
            Message.mark_read_on_whatsapp(messages)
            Message.send_read_receipts([messages[1]])
            self.assertEqual(self.sim.reads, [wamids[1]])

    @with_transaction()
    def test_sync_reads_every_page_and_follows_status_changes(self):
        Template = Pool().get('crm.whatsapp.template')
        self.sim.set_templates([{'name': f'promo_{i}', 'category': 'MARKETING',
                    'body': "Hi {{1}}, {{2}} off"} for i in range(230)]
            + [{'name': 'brochure', 'header': 'DOCUMENT',
                    'body': "Hello {{1}}, the brochure."}], replace=True)
        self.assertEqual(Template.sync(), 231)
        brochure, = Template.search([('name', '=', 'brochure')])
        self.assertEqual((brochure.category, brochure.status,
                brochure.header_format, brochure.parameter_count),
            ('UTILITY', 'APPROVED', 'DOCUMENT', 1))
        self.sim.set_templates([{'name': 'brochure', 'status': 'PAUSED',
                    'header': 'DOCUMENT', 'body': "Hello {{1}}"},
                {'name': 'promo_0', 'status': 'REJECTED',
                    'body': "Hi"}], replace=True)
        self.assertEqual(Template.sync(), 2)
        self.assertEqual(Template.search_count([]), 2)
        gone = Template.search([('active', '=', False)])
        self.assertEqual(len(gone), 229)
        self.assertEqual({t.name: t.status for t in Template.search([])},
            {'brochure': 'PAUSED', 'promo_0': 'REJECTED'})
        self.assertEqual(Template.approved(), [])

    @with_transaction()
    def test_sync_without_the_business_account_says_which_setting(self):
        Template = Pool().get('crm.whatsapp.template')
        config.set('kraya_crm', 'whatsapp_business_account_id', '')
        with self.assertRaises(TemplateSyncError) as raised:
            Template.sync()
        self.assertIn('whatsapp_business_account_id',
            raised.exception.message)

    @with_transaction()
    def test_preview_and_prefill_of_a_template(self):
        with set_company(create_company()):
            visit = self.sync_catalogue([{'name': 'visit',
                        'body': "Hello {{1}}, your visit is at {{2}}."}])[
                'visit']
            lead = whatsapp_lead(name="Asha Rao")
            self.assertEqual(visit.prefill(lead), ["Asha", ""])
            self.assertEqual(visit.preview(["Asha", "5 PM"]),
                "Hello Asha, your visit is at 5 PM.")
            self.assertEqual(visit.preview(["Asha"]),
                "Hello Asha, your visit is at {{2}}.")

    @with_transaction()
    def test_lead_image_is_downloaded_into_an_attachment_of_the_lead(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            lead = whatsapp_lead()
            answer = self.sim.reply(lead.whatsapp_number, media={'image': {
                        'mime_type': 'image/png', 'data': PNG,
                        'caption': "Plot 7"}})
            self.receive({'contacts': [{'wa_id': LEAD_ID,
                            'profile': {'name': "Asha"}}],
                    'messages': [{'from': LEAD_ID, 'id': answer['wamid'],
                            'timestamp': str(int(time.time())),
                            'type': 'image', 'image': {
                                'id': answer['media_id'],
                                'mime_type': 'image/png'}}]})
            message, = Message.search([('provider_id', '=', answer['wamid'])])
            self.assertEqual((message.media_state, message.media_id),
                ('pending', answer['media_id']))
            Message.fetch_media([message])
            message = Message(message.id)
            self.assertEqual(message.media_state, 'fetched')
            self.assertEqual((message.media.data, message.media.name,
                    message.media.resource),
                (PNG, f"image-{answer['wamid']}.png", lead))

    @with_transaction()
    def test_failed_download_is_retried_then_shown_when_it_expired(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            lead = whatsapp_lead()
            answer = self.sim.reply(lead.whatsapp_number, media={'document': {
                        'mime_type': 'application/pdf', 'data': PDF,
                        'filename': 'KYC.pdf'}})
            message, = Message.create([{'lead': lead.id,
                        'direction': 'inbound', 'channel': 'whatsapp',
                        'status': 'received', 'kind': 'document',
                        'provider_id': answer['wamid'],
                        'media_id': answer['media_id'],
                        'media_filename': 'KYC.pdf',
                        'media_state': 'pending'}])
            self.sim.fail_media(answer['media_id'], 1)
            Message.fetch_media([message])
            message = Message(message.id)
            self.assertEqual((message.media_state, message.media_attempts),
                ('failed', 1))
            self.assertIn("131000", message.media_error)
            self.assertGreater(message.media_retry_at, utcnow())
            # The cron's sweep, once the wait is over.
            Message.write([message], {'media_retry_at': utcnow()})
            self.assertEqual(Message.fetch_due_media(), 1)
            Message.fetch_media([message])
            self.assertEqual(Message(message.id).media.name, 'KYC.pdf')

            expired = self.sim.reply(lead.whatsapp_number, media={'image': {
                        'mime_type': 'image/jpeg', 'data': b'\xff\xd8jpeg'}})
            self.sim.expire_media(expired['media_id'])
            gone, = Message.create([{'lead': lead.id,
                        'direction': 'inbound', 'channel': 'whatsapp',
                        'status': 'received', 'kind': 'image',
                        'provider_id': expired['wamid'],
                        'media_id': expired['media_id'],
                        'media_state': 'pending'}])
            Message.fetch_media([gone])
            gone = Message(gone.id)
            self.assertEqual((gone.media_state, gone.media_retry_at),
                ('failed', None))
            self.assertIn("does not exist", gone.media_error)

    def marketing_catalogue(self):
        return self.sync_catalogue([
                {'name': 'festive_offer', 'category': 'MARKETING',
                    'body': "Hi {{1}}, 5% off this Diwali"},
                {'name': 'visit_reminder', 'category': 'UTILITY',
                    'body': "Hi {{1}}, see you at 5 PM"}])

    def template_messages(self, lead, templates):
        return [self.outbound(lead, kind='template',
                template=templates[name].id, template_name=name,
                template_language='en', template_parameters='["Asha"]')
            for name in ['festive_offer', 'visit_reminder']]

    @with_transaction()
    def test_stop_promotions_button_stops_marketing_templates_only(self):
        with set_company(create_company()):
            templates = self.marketing_catalogue()
            lead = self.talking_lead()
            self.receive({'messages': [{'from': LEAD_ID, 'id': 'wamid.SP1',
                            'timestamp': str(int(time.time())),
                            'type': 'button', 'button': {
                                'text': "Stop promotions",
                                'payload': "Stop promotions"}}]})
            lead = lead.__class__(lead.id)
            self.assertEqual(lead.consent('whatsapp_marketing').state,
                'opted_out')
            self.assertTrue(lead.may_contact('whatsapp'))
            offer, reminder = [self.deliver(m)
                for m in self.template_messages(lead, templates)]
            self.assertEqual((offer.status, reminder.status),
                ('skipped', 'sent'))
            self.assertIn("stopped marketing", offer.error_message)
            self.assertEqual([m['template']['name']
                    for m in self.sent_to(lead)], ['visit_reminder'])

    @with_transaction()
    def test_user_preferences_stop_then_resume_marketing(self):
        with set_company(create_company()):
            lead = self.talking_lead()
            now = int(time.time())
            for value, at in [('stop', now), ('resume', now + 60)]:
                self.receive({'user_preferences': [{'wa_id': LEAD_ID,
                                'detail': f"User requested to {value}",
                                'category': 'marketing_messages',
                                'value': value, 'timestamp': at}]})
                consent = lead.__class__(lead.id).consent(
                    'whatsapp_marketing')
                self.assertEqual(consent.state, {'stop': 'opted_out',
                        'resume': 'opted_in'}[value])
            self.assertIn("resume", consent.opted_in_basis)

    @with_transaction()
    def test_131050_opts_out_of_marketing_and_utility_still_goes(self):
        with set_company(create_company()):
            templates = self.marketing_catalogue()
            lead = self.talking_lead()
            offer, reminder = self.template_messages(lead, templates)
            self.sim.fail(lead.whatsapp_number, 131050)
            offer = self.deliver(offer)
            self.assertEqual((offer.status, offer.error_code),
                ('failed', '131050'))
            lead = lead.__class__(lead.id)
            consent = lead.consent('whatsapp_marketing')
            self.assertEqual(consent.state, 'opted_out')
            self.assertIn("131050", consent.opted_out_reason)
            self.assertEqual(self.deliver(reminder).status, 'sent')
            again, = self.template_messages(lead, templates)[:1]
            self.assertEqual(self.deliver(again).status, 'skipped')

    @with_transaction()
    def test_131049_waits_a_day_once_then_gives_up(self):
        with set_company(create_company()):
            templates = self.marketing_catalogue()
            lead = self.talking_lead()
            offer, _ = self.template_messages(lead, templates)
            self.sim.fail(lead.whatsapp_number, 131049, times=2)
            offer = self.deliver(offer)
            self.assertEqual(offer.status, 'queued')
            self.assertGreater(offer.send_after,
                utcnow() + dt.timedelta(hours=23))
            offer = self.deliver(offer)
            self.assertEqual((offer.status, offer.error_code),
                ('failed', '131049'))
            self.assertIn("not tried again", offer.error_message)
            self.assertEqual(self.sent_to(lead), [])

    @with_transaction()
    def test_131026_marks_the_number_not_on_whatsapp(self):
        with set_company(create_company()):
            lead = self.talking_lead()
            self.sim.configure(not_on_whatsapp=[lead.whatsapp_number])
            message = self.deliver(self.outbound(lead, body="Hello"))
            self.assertEqual((message.status, message.error_code),
                ('failed', '131026'))
            self.assertTrue(lead.__class__(lead.id).not_on_whatsapp)

    @with_transaction()
    def test_step_file_goes_as_the_templates_document_header(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            brochure = self.sync_catalogue([{'name': 'brochure',
                        'header': 'DOCUMENT',
                        'body': "Hello {{1}}, the brochure."}])['brochure']
            make_sequence([{'channel': 'whatsapp_template',
                        'template': brochure.id,
                        'template_parameters': '{lead.first_name}',
                        'file': PDF, 'file_name': 'Powai.pdf'}])
            sequence, = Pool().get('crm.sequence').search([])
            self.assertEqual(sequence.steps[0].template_name, 'brochure')
            lead = whatsapp_lead()
            Pool().get('crm.enrollment').enrol(sequence, [(lead, None)])
            run()
            message, = Message.search([('lead', '=', lead.id)])
            self.assertEqual((message.kind, message.template, message.media.name),
                ('template', brochure, 'Powai.pdf'))
            self.deliver(message)
            sent, = self.sent_to(lead)
            self.assertEqual((sent['type'], sent['template']['parameters'],
                    sent['media']['filename'], sent['media']['size']),
                ('template', ["Asha"], 'Powai.pdf', len(PDF)))

    @with_transaction()
    def test_step_file_without_a_header_follows_the_text(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            sequence = make_sequence([{'channel': 'whatsapp_text',
                        'body': "Namaste {lead.first_name}!",
                        'file': PNG, 'file_name': 'plan.png'}])
            lead = self.talking_lead()
            Pool().get('crm.enrollment').enrol(sequence, [(lead, None)])
            run()
            text, image = Message.search([('lead', '=', lead.id)],
                order=[('id', 'ASC')])
            self.assertEqual([(m.kind, m.media and m.media.name)
                    for m in [text, image]],
                [('text', None), ('image', 'plan.png')])
            for message in [text, image]:
                self.deliver(message)
            self.assertEqual([(m['type'], m['media'] and m['media']['size'])
                    for m in self.sent_to(lead)],
                [('text', None), ('image', len(PNG))])

    @with_transaction()
    def test_step_file_whatsapp_refuses_is_refused_on_save(self):
        with set_company(create_company()):
            with self.assertRaises(MediaError):
                make_sequence([{'channel': 'whatsapp_text', 'body': "Hi",
                            'file': b'GIF89a', 'file_name': 'smile.gif'}])
