"""Rotating a webhook secret without downtime: while [kraya_crm]
<name>_previous holds the old secret, a body signed with either passes
the endpoint's check; the demo value never does on a real site."""
import hashlib
import hmac
import unittest

from trytond.protocols.wrappers import Request
from werkzeug.test import EnvironBuilder

from kraya_crm.http import RateLimiter, valid_secrets
from kraya_crm.routes import signed_body
from kraya_crm.settings import DEMO_VALUES

from .test_mail import configure

BODY = b'{"object": "whatsapp_business_account", "entry": []}'


def signed(secret, body=BODY):
    signature = 'sha256=' + hmac.new(
        secret.encode(), body, hashlib.sha256).hexdigest()
    return Request(EnvironBuilder(method='POST', data=body,
            headers={'X-Hub-Signature-256': signature}).get_environ())


def check(request):
    "The status signed_body answers, 200 when it takes the body."
    body, refused = signed_body(request, '127.0.0.1', "WhatsApp webhook",
        valid_secrets('whatsapp_app_secret'), 'X-Hub-Signature-256',
        RateLimiter(100, 60), 1024)
    return refused.status_code if refused else 200


class SecretRotationTestCase(unittest.TestCase):

    def test_without_rotation_only_the_current_secret_signs(self):
        configure(self, 'kraya_crm', demo='False',
            whatsapp_app_secret='new-secret', whatsapp_app_secret_previous='')
        self.assertEqual(
            [check(signed('new-secret')), check(signed('old-secret'))],
            [200, 403])

    def test_during_a_rotation_both_secrets_sign(self):
        configure(self, 'kraya_crm', demo='False',
            whatsapp_app_secret='new-secret',
            whatsapp_app_secret_previous='old-secret')
        self.assertEqual(
            [check(signed(s)) for s in ['new-secret', 'old-secret', 'other']],
            [200, 200, 403])

    def test_the_demo_secret_is_no_previous_secret_on_a_real_site(self):
        demo = DEMO_VALUES['whatsapp_app_secret']
        configure(self, 'kraya_crm', demo='False',
            whatsapp_app_secret='new-secret',
            whatsapp_app_secret_previous=demo)
        self.assertEqual(check(signed(demo)), 403)

    def test_no_secret_no_rotation(self):
        configure(self, 'kraya_crm', demo='False', whatsapp_app_secret='',
            whatsapp_app_secret_previous='old-secret')
        self.assertEqual(valid_secrets('whatsapp_app_secret'), [])
        self.assertEqual(check(signed('old-secret')), 403)
