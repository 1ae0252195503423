"Web forms: the field mapper, the checks of a submission, the source."
import json
import unittest

from trytond.model.exceptions import ValidationError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from ..web_form import (
    DEFAULT_CONSENT_TEXT, HONEYPOT, MISSING, PRESETS, FieldMapError,
    SubmissionError, clean_submission, lookup, map_payload, origin_allowed,
    parse_body, parse_field_map, render_snippet, valid_origin)

FACEBOOK_LEAD = {
    'id': '1422873591823464',
    'created_time': '2026-11-20T09:14:02+0000',
    'ad_id': '23851234567890123',
    'form_id': '1020304050607080',
    'campaign_name': "Thane 2BHK Diwali",
    'field_data': [
        {'name': 'full_name', 'values': ["Sneha Joshi"]},
        {'name': 'phone_number', 'values': ["+919819012345"]},
        {'name': 'email', 'values': ["Sneha.Joshi@Example.in"]},
        {'name': 'city', 'values': ["Thane"]},
        ],
    }
INDIAMART_PUSH = {
    'CODE': 200,
    'STATUS': 'SUCCESS',
    'RESPONSE': {
        'UNIQUE_QUERY_ID': '2789123456',
        'QUERY_TYPE': 'W',
        'QUERY_TIME': '2026-11-20 10:05:41',
        'SENDER_NAME': "Rakesh Gupta",
        'SENDER_MOBILE': '+91-9811122334',
        'SENDER_EMAIL': 'rakesh@guptatraders.in',
        'SUBJECT': "Requirement for Office Space",
        'SENDER_COMPANY': "Gupta Traders",
        'SENDER_CITY': "Navi Mumbai",
        'SENDER_STATE': "Maharashtra",
        'QUERY_PRODUCT_NAME': "Office Space",
        'QUERY_MESSAGE': "Need 1200 sq ft near Vashi station.",
        },
    }


def texts(mapped):
    return {target: text for target, (text, _) in mapped.items()}


class FieldMapTestCase(unittest.TestCase):
    "Pure functions: no database."

    def test_lookup_follows_dotted_path_into_nested_dicts(self):
        self.assertEqual(lookup({'a': {'b': {'c': 'x'}}}, 'a.b.c'), 'x')

    def test_lookup_picks_facebook_field_data_item_by_name(self):
        self.assertEqual(
            lookup(FACEBOOK_LEAD, 'field_data.phone_number'),
            ["+919819012345"])

    def test_lookup_indexes_lists_with_numbers(self):
        self.assertEqual(lookup({'data': [{'x': 1}, {'x': 2}]}, 'data.1.x'), 2)

    def test_lookup_reads_key_containing_dots(self):
        self.assertEqual(lookup({'utm.source': 'fb'}, 'utm.source'), 'fb')

    def test_lookup_of_absent_path_is_missing(self):
        self.assertIs(lookup(FACEBOOK_LEAD, 'field_data.fax'), MISSING)
        self.assertIs(lookup({'a': 'text'}, 'a.b'), MISSING)

    def test_facebook_preset_maps_lead(self):
        mapped = map_payload(FACEBOOK_LEAD, PRESETS['facebook'])
        self.assertEqual(texts(mapped), {
                'name': "Sneha Joshi",
                'phone': "+919819012345",
                'email': "Sneha.Joshi@Example.in",
                'city': "Thane",
                'campaign': "Thane 2BHK Diwali",
                })

    def test_facebook_first_and_last_name_are_joined(self):
        lead = {'field_data': [
                {'name': 'first_name', 'values': ["Sneha"]},
                {'name': 'last_name', 'values': ["Joshi"]}]}
        mapped = map_payload(lead, PRESETS['facebook'])
        self.assertEqual(mapped['name'][0], "Sneha Joshi")

    def test_indiamart_preset_maps_push(self):
        mapped = map_payload(INDIAMART_PUSH, PRESETS['indiamart'])
        self.assertEqual(texts(mapped), {
                'name': "Rakesh Gupta",
                'phone': '+91-9811122334',
                'email': 'rakesh@guptatraders.in',
                'company_name': "Gupta Traders",
                'city': "Navi Mumbai",
                'state': "Maharashtra",
                'notes': "Requirement for Office Space\n"
                "Need 1200 sq ft near Vashi station.",
                })

    def test_mapped_value_remembers_incoming_path(self):
        mapped = map_payload(INDIAMART_PUSH, PRESETS['indiamart'])
        self.assertEqual(mapped['phone'][1], 'RESPONSE.SENDER_MOBILE')

    def test_snippet_fields_map_without_field_map(self):
        mapped = map_payload({'name': "Asha", 'mobile': '9876543210',
                'message': "2BHK?", 'utm_campaign': 'diwali'}, {})
        self.assertEqual(texts(mapped), {'name': "Asha",
                'phone': '9876543210', 'notes': "2BHK?", 'campaign': 'diwali'})

    def test_field_map_overrides_snippet_field(self):
        mapped = map_payload({'name': "Asha Foods"}, {'name': 'company_name'})
        self.assertEqual(texts(mapped), {'company_name': "Asha Foods"})

    def test_number_phone_is_text_without_decimals(self):
        mapped = map_payload({'phone': 9876543210.0}, {})
        self.assertEqual(mapped['phone'][0], '9876543210')

    def test_object_where_text_expected_names_the_field(self):
        with self.assertRaises(SubmissionError) as caught:
            map_payload({'name': {'first': "Asha"}}, {})
        self.assertEqual((caught.exception.code, caught.exception.field),
            ('not_text', 'name'))

    def test_parse_field_map_accepts_empty_text(self):
        self.assertEqual(parse_field_map('  '), {})

    def test_parse_field_map_refuses_invalid_json(self):
        with self.assertRaises(FieldMapError) as caught:
            parse_field_map('{"a": ')
        self.assertEqual(
            caught.exception.message, 'msg_web_form_field_map_json')

    def test_parse_field_map_refuses_list(self):
        with self.assertRaises(FieldMapError) as caught:
            parse_field_map('["phone"]')
        self.assertEqual(
            caught.exception.message, 'msg_web_form_field_map_object')

    def test_parse_field_map_refuses_unknown_lead_field(self):
        with self.assertRaises(FieldMapError) as caught:
            parse_field_map('{"SENDER_MOBILE": "mobile_no"}')
        self.assertEqual(caught.exception.params['target'], 'mobile_no')

    def test_parse_field_map_refuses_empty_path_segment(self):
        with self.assertRaises(FieldMapError) as caught:
            parse_field_map('{"RESPONSE..SENDER_NAME": "name"}')
        self.assertEqual(
            caught.exception.message, 'msg_web_form_field_map_path')

    def test_presets_are_valid_field_maps(self):
        for preset in PRESETS.values():
            self.assertEqual(parse_field_map(json.dumps(preset)), preset)


class SubmissionTestCase(unittest.TestCase):
    "Pure functions: no database."

    def clean(self, payload):
        return clean_submission(map_payload(payload, {}))

    def test_phone_becomes_e164_india_by_default(self):
        values, _, _ = self.clean({'phone': '098765 43210'})
        self.assertEqual(values['phone'], '+919876543210')

    def test_email_is_lower_cased(self):
        values, _, _ = self.clean({'email': ' Asha@Example.IN '})
        self.assertEqual(values['email'], 'asha@example.in')

    def test_invalid_phone_names_the_incoming_field(self):
        with self.assertRaises(SubmissionError) as caught:
            clean_submission(map_payload(
                    {'RESPONSE': {'SENDER_MOBILE': '12345'}},
                    PRESETS['indiamart']))
        self.assertEqual((caught.exception.code, caught.exception.field),
            ('invalid_phone', 'RESPONSE.SENDER_MOBILE'))

    def test_invalid_email_is_refused(self):
        with self.assertRaises(SubmissionError) as caught:
            self.clean({'phone': '9876543210', 'email': 'asha@'})
        self.assertEqual(caught.exception.code, 'invalid_email')

    def test_no_phone_nor_email_is_refused(self):
        with self.assertRaises(SubmissionError) as caught:
            self.clean({'name': "Asha"})
        self.assertEqual(caught.exception.code, 'missing_contact')

    def test_too_long_name_is_refused(self):
        with self.assertRaises(SubmissionError) as caught:
            self.clean({'name': 'x' * 201, 'phone': '9876543210'})
        self.assertEqual(caught.exception.code, 'too_long')

    def test_ticked_checkbox_is_consent(self):
        _, _, consent = self.clean({'phone': '9876543210', 'consent': 'on'})
        self.assertTrue(consent)

    def test_false_checkbox_is_no_consent(self):
        _, _, consent = self.clean({'phone': '9876543210', 'consent': False})
        self.assertFalse(consent)

    def test_state_is_kept_aside_as_text(self):
        values, state, _ = self.clean(
            {'phone': '9876543210', 'state': 'Maharashtra'})
        self.assertEqual(state, 'Maharashtra')
        self.assertNotIn('state', values)

    def test_form_encoded_body_is_read(self):
        self.assertEqual(parse_body(b'name=Asha+K&phone=98765%2043210',
                'application/x-www-form-urlencoded'),
            {'name': "Asha K", 'phone': '98765 43210'})

    def test_json_body_is_read(self):
        self.assertEqual(parse_body(b'{"name": "Asha"}',
                'application/json; charset=utf-8'), {'name': "Asha"})

    def test_json_list_body_is_refused(self):
        with self.assertRaises(SubmissionError):
            parse_body(b'[1]', 'application/json')

    def test_multipart_body_is_refused(self):
        with self.assertRaises(SubmissionError):
            parse_body(b'--x--', 'multipart/form-data; boundary=x')


class OriginTestCase(unittest.TestCase):

    def test_listed_origin_is_allowed_whatever_its_case_or_slash(self):
        self.assertTrue(origin_allowed(
                'https://www.example.in/\n', 'https://WWW.example.in', 'crm'))

    def test_unlisted_origin_is_refused(self):
        self.assertFalse(origin_allowed(
                'https://www.example.in', 'https://evil.example', 'crm'))

    def test_star_allows_any_origin(self):
        self.assertTrue(origin_allowed('*', 'https://evil.example', 'crm'))

    def test_own_site_is_allowed(self):
        self.assertTrue(origin_allowed(
                '', 'https://crm.example.in', 'crm.example.in'))

    def test_origin_with_path_is_not_an_origin(self):
        self.assertFalse(valid_origin('https://www.example.in/contact'))
        self.assertTrue(valid_origin('http://127.0.0.1:8080'))


class SnippetTestCase(unittest.TestCase):

    def snippet(self, consent_text=DEFAULT_CONSENT_TEXT):
        return render_snippet('https://crm.example.in/default/crm/capture/k1',
            'kraya-form-website', "Website <Form>", consent_text)

    def test_snippet_posts_json_to_capture_url(self):
        snippet = self.snippet()
        self.assertIn(
            'var url = "https://crm.example.in/default/crm/capture/k1"',
            snippet)
        self.assertIn("fetch(url, {method: 'POST'", snippet)

    def test_snippet_hides_honeypot_off_screen(self):
        self.assertIn(f'name="{HONEYPOT}" tabindex="-1"', self.snippet())

    def test_snippet_shows_consent_text_escaped(self):
        snippet = self.snippet("I agree <to> calls & WhatsApp")
        self.assertIn('name="consent"', snippet)
        self.assertIn("I agree &lt;to&gt; calls &amp; WhatsApp", snippet)

    def test_snippet_without_consent_text_has_no_checkbox(self):
        self.assertNotIn('name="consent"', self.snippet(None))


class WebFormSourceTestCase(unittest.TestCase):
    "The source's settings and a submission, in the database."

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    def source(self, **values):
        Source = Pool().get('crm.source')
        source, = Source.create([{'name': "Test Form", 'code': 'test-form',
                    'web_form': True, **values}])
        return source

    @with_transaction()
    def test_new_sources_get_distinct_capture_keys(self):
        Source = Pool().get('crm.source')
        one, two = Source.create([
                {'name': "One", 'code': 'one'},
                {'name': "Two", 'code': 'two'}])
        self.assertTrue(one.capture_key)
        self.assertNotEqual(one.capture_key, two.capture_key)

    @with_transaction()
    def test_regenerate_key_changes_key(self):
        Source = Pool().get('crm.source')
        source = self.source()
        key = source.capture_key
        Source.regenerate_key([source])
        self.assertNotEqual(source.capture_key, key)
        self.assertEqual(Source.by_capture_key(source.capture_key), source)

    @with_transaction()
    def test_copied_source_gets_its_own_key(self):
        Source = Pool().get('crm.source')
        source = self.source()
        copy, = Source.copy([source], default={'code': 'copy'})
        self.assertNotEqual(copy.capture_key, source.capture_key)

    @with_transaction()
    def test_invalid_field_map_is_refused_on_save(self):
        with self.assertRaisesRegex(ValidationError, 'not a lead field'):
            self.source(field_map='{"SENDER_MOBILE": "mobile_no"}')

    @with_transaction()
    def test_invalid_allowed_origin_is_refused_on_save(self):
        with self.assertRaisesRegex(ValidationError, 'is not an origin'):
            self.source(allowed_origins='https://example.in/contact-us')

    @with_transaction()
    def test_preset_fills_field_map(self):
        source = self.source(field_map_preset='indiamart')
        self.assertEqual(
            json.loads(source.field_map), PRESETS['indiamart'])

    @with_transaction()
    def test_disabled_web_form_is_not_found_by_key(self):
        Source = Pool().get('crm.source')
        source = self.source(web_form=False)
        self.assertIsNone(Source.by_capture_key(source.capture_key))

    @with_transaction()
    def test_submission_creates_lead_of_source_with_timeline_message(self):
        source = self.source()
        with set_company(create_company()):
            lead, created = source.capture_submission({
                    'name': "Asha", 'phone': '98765 43210',
                    'message': "2BHK in Thane?"})
        self.assertTrue(created)
        self.assertEqual((lead.phone, lead.source, lead.notes),
            ('+919876543210', source, "2BHK in Thane?"))
        message, = lead.messages
        self.assertEqual((message.channel, message.direction),
            ('web', 'inbound'))
        self.assertIn("2BHK in Thane?", message.body)

    @with_transaction()
    def test_second_submission_keeps_its_message_on_timeline(self):
        source = self.source()
        with set_company(create_company()):
            first, _ = source.capture_submission(
                {'phone': '9876543210', 'message': "First"})
            second, created = source.capture_submission(
                {'phone': '+91 98765 43210', 'message': "Second"})
        self.assertEqual((second, created), (first, False))
        self.assertEqual(sorted(m.body.splitlines()[-1]
                for m in second.messages), ["First", "Second"])

    @with_transaction()
    def test_ticked_consent_opts_in_with_consent_text_as_basis(self):
        source = self.source()
        with set_company(create_company()):
            lead, _ = source.capture_submission({
                    'phone': '9876543210', 'email': 'asha@example.in',
                    'consent': 'yes'})
        self.assertEqual(
            {(c.channel, c.opted_in_how, c.opted_in_basis)
                for c in lead.consents},
            {('whatsapp', 'form', DEFAULT_CONSENT_TEXT),
                ('email', 'form', DEFAULT_CONSENT_TEXT)})

    @with_transaction()
    def test_unticked_consent_records_nothing(self):
        source = self.source()
        with set_company(create_company()):
            lead, _ = source.capture_submission({'phone': '9876543210'})
        self.assertEqual(lead.consents, ())

    @with_transaction()
    def test_unknown_state_is_kept_in_notes(self):
        source = self.source()
        with set_company(create_company()):
            lead, _ = source.capture_submission({
                    'phone': '9876543210', 'state': "Atlantis"})
        self.assertIsNone(lead.subdivision)
        self.assertIn("State: Atlantis", lead.notes)
