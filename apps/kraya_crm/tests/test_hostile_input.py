"""Hostile input for every parser behind a public endpoint, fuzzed with
Hypothesis: whatever arrives (malformed JSON, deep nesting, NUL bytes, huge
strings, invalid UTF-8, wrong types), each parser either reads it or raises
its own error, which the endpoint answers 4xx and keeps as a dead letter.
Any other exception would be a 500 and a crashed batch."""
import io
import json
import unittest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from kraya_crm.exceptions import LeadImportError
from kraya_crm.mail import NotAnEmail, read_email
from kraya_crm.web_form import (
    SubmissionError, clean_submission, map_payload, parse_body)
from kraya_crm.whatsapp import WebhookError, read_delivery

FUZZ = settings(max_examples=300, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=40) | st.just('\x00') | st.just('9876543210')
    | st.just('x' * 100_000))
json_values = st.recursive(scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12) | st.sampled_from([
                'object', 'entry', 'changes', 'value', 'messages',
                'contacts', 'statuses', 'id', 'from', 'type', 'text',
                'body', 'profile', 'name', 'wa_id', 'timestamp', 'context',
                'image', 'errors', 'status', 'user_preferences', 'phone',
                'email', 'notes', 'state', 'consent']),
        children, max_size=5),
    max_leaves=30)


def nested(depth, kind):
    return kind[0] * depth + kind[1] * depth


# Bytes a sender may post: random, JSON of any shape, JSON too deep for a
# recursive reader, and JSON with invalid UTF-8 or NUL bytes inside.
bodies = (st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(nested, st.integers(50, 20_000),
        st.sampled_from(['[]', ('{"a":', '}')])).map(str.encode)
    | st.binary(max_size=20).map(
        lambda b: b'{"name": "' + b + b'\xff\x00", "phone": 1}'))


def whatsapp_body(value):
    return json.dumps({'object': 'whatsapp_business_account',
            'entry': [{'changes': [{'value': value}]}]}).encode()


# A Cloud API delivery whose every part may have the wrong type.
KINDS = ['text', 'image', 'document', 'interactive', 'button', 'location',
    'reaction', 'unsupported']
some = json_values | st.sampled_from(KINDS)
item = st.fixed_dictionaries({}, optional={
        key: some for key in ['id', 'from', 'type', 'timestamp', 'context',
            'profile', 'wa_id', 'status', 'recipient_id', 'errors',
            'category', 'value', 'biz_opaque_callback_data', *KINDS]})
deliveries = st.fixed_dictionaries({}, optional={
        key: st.lists(item, max_size=3) | some
        for key in ['messages', 'contacts', 'statuses', 'user_preferences']
        }).map(whatsapp_body)


class HostileInputTestCase(unittest.TestCase):

    @given(bodies | deliveries)
    @FUZZ
    def test_whatsapp_delivery_is_read_or_refused(self, body):
        try:
            read_delivery(body)
        except WebhookError:
            pass

    @given(bodies, st.sampled_from(['application/json', 'text/plain', '',
                'application/x-www-form-urlencoded', 'image/png']))
    @FUZZ
    def test_web_form_body_is_read_or_refused(self, body, content_type):
        try:
            clean_submission(map_payload(parse_body(body, content_type), {}))
        except SubmissionError:
            pass

    def test_web_form_notes_nested_5000_deep_is_refused(self):
        body = b'{"name": "Asha", "phone": "9876543210", "notes": ' \
            + nested(5000, '[]').encode() + b'}'
        with self.assertRaises(SubmissionError) as refused:
            parse_body(body, 'application/json')
        self.assertEqual(refused.exception.code, 'invalid_body')

    @given(st.binary(max_size=400) | st.builds(
            lambda headers, body: headers + b'\r\n\r\n' + body,
            st.binary(max_size=120).map(lambda b: b'From: ' + b),
            st.binary(max_size=200)))
    @FUZZ
    def test_inbound_email_is_read_or_refused(self, raw):
        try:
            read_email(raw)
        except NotAnEmail:
            pass


class HostileImportTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_import_file_is_read_or_refused_and_writes_nothing(self):
        Lead = Pool().get('crm.lead')
        files = (st.binary(max_size=400)
            | st.lists(st.lists(st.text(max_size=20), max_size=5),
                max_size=5).map(lambda rows: '\n'.join(
                    ','.join(r) for r in [['Name', 'Mobile']] + rows
                    ).encode('utf-8', 'surrogatepass')))

        @given(files, st.sampled_from(['leads.csv', 'leads.xlsx']))
        @settings(max_examples=150, deadline=None,
            suppress_health_check=list(HealthCheck))
        def check(data, filename):
            try:
                Lead.import_file(io.BytesIO(data), filename,
                    source='import', dry_run=True)
            except LeadImportError:
                pass
            self.assertEqual(Lead.search([], count=True), 0)

        with set_company(create_company()):
            check()
