"API keys of the integration API: stored hashed, revoked, scoped."
import hashlib
import json
import re
import unittest

import jsonschema

from trytond.model.exceptions import SelectionValidationError
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..api import OPERATIONS, SCHEMAS, openapi
from ..api_key import PREFIX, VISIBLE


def issue(scopes=('leads:read',)):
    ApiKey = Pool().get('crm.api.key')
    return ApiKey.issue("n8n", Transaction().user or 1, scopes)


class ApiKeyTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_only_the_hash_and_a_short_start_of_the_key_are_stored(self):
        record, key = issue()
        self.assertTrue(key.startswith(PREFIX))
        self.assertGreaterEqual(len(key), len(PREFIX) + 40)
        self.assertEqual(record.key_hash,
            hashlib.sha256(key.encode()).hexdigest())
        self.assertEqual(record.key_start, key[:VISIBLE])
        ApiKey = Pool().get('crm.api.key')
        stored = json.dumps(ApiKey.read([record.id], list(ApiKey._fields)),
            default=str)
        self.assertNotIn(key, stored)

    @with_transaction()
    def test_two_keys_are_never_the_same(self):
        (_, first), (_, second) = issue(), issue()
        self.assertNotEqual(first, second)

    @with_transaction()
    def test_key_authenticates_and_a_wrong_one_does_not(self):
        ApiKey = Pool().get('crm.api.key')
        record, key = issue()
        self.assertEqual(ApiKey.authenticate(key), record)
        for wrong in [key[:-1], key + 'x', key.upper(), '', None,
                key[len(PREFIX):], 'kraya_' + 'a' * 300]:
            with self.subTest(wrong=wrong):
                self.assertIsNone(ApiKey.authenticate(wrong))

    @with_transaction()
    def test_revoked_key_no_longer_authenticates(self):
        ApiKey = Pool().get('crm.api.key')
        record, key = issue()
        ApiKey.revoke([record])
        self.assertEqual(record.state, 'revoked')
        self.assertIsNotNone(record.revoked_at)
        self.assertIsNone(ApiKey.authenticate(key))

    @with_transaction()
    def test_last_use_is_written_at_most_once_a_minute(self):
        ApiKey = Pool().get('crm.api.key')
        record, _ = issue()
        self.assertTrue(record.use_is_stale())
        record.note_use()
        # Written in SQL, past the transaction's cache of records.
        for cache in Transaction().cache.values():
            cache.clear()
        record = ApiKey(record.id)
        self.assertIsNotNone(record.last_used_at)
        self.assertFalse(record.use_is_stale())

    @with_transaction()
    def test_unknown_scope_is_refused(self):
        with self.assertRaises(SelectionValidationError):
            issue(scopes=['leads:read', 'everything'])

    @with_transaction()
    def test_wizard_shows_the_key_once_and_stores_its_hash(self):
        pool = Pool()
        ApiKey = pool.get('crm.api.key')
        Create = pool.get('crm.api.key.create', type='wizard')
        session_id, _, _ = Create.create()
        answer = Create.execute(session_id, {'start': {
                    'name': "Zapier", 'user': 1,
                    'scopes': ['deals:read']}}, 'create_key')
        key = answer['view']['defaults']['key']
        record, = ApiKey.search([('name', '=', "Zapier")])
        self.assertEqual(ApiKey.authenticate(key), record)
        self.assertEqual(record.scopes, ('deals:read',))
        Create.delete(session_id)


class OpenApiDocumentTestCase(unittest.TestCase):
    "The document is written from OPERATIONS: whole and valid schemas."

    def test_every_operation_is_in_the_document_with_the_bearer_scheme(self):
        document = openapi('db')
        operations = [(path, method) for path, item in
            document['paths'].items() for method in item]
        self.assertEqual(sorted(operations), sorted(
                (o.path, o.method.lower()) for o in OPERATIONS))
        for path, method in operations:
            self.assertEqual(document['paths'][path][method]['security'],
                [{'apiKey': []}])
        self.assertEqual(
            document['components']['securitySchemes']['apiKey']['scheme'],
            'bearer')

    def test_every_schema_is_valid_json_schema_and_every_ref_resolves(self):
        for name, schema in SCHEMAS.items():
            with self.subTest(schema=name):
                jsonschema.Draft202012Validator.check_schema(schema)
        document = openapi('db')
        for kind, name in set(re.findall(r'"#/components/(\w+)/(\w+)"',
                    json.dumps(document))):
            self.assertIn(name, document['components'][kind])
