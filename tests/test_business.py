"The checks of a new site's company and of its secret settings: no database."
import configparser
import unittest
from pathlib import Path

from kraya_site.business import BusinessError, check, check_gstin, indian_state
from kraya_crm.settings import DEMO_VALUES, refusal

TEMPLATE = Path(__file__).resolve().parents[1] / 'sites' / 'default' / \
    'trytond.conf'


class BusinessTestCase(unittest.TestCase):

    def test_state_is_found_by_code_iso_code_or_name(self):
        self.assertEqual({indian_state(t) for t in
                ['MH', 'in-mh', 'Maharashtra', ' maharashtra ']}, {'IN-MH'})

    def test_unknown_state_is_refused_with_what_to_give(self):
        with self.assertRaisesRegex(BusinessError, 'MH, KA, DL'):
            indian_state('Bombay')

    def test_gstin_of_another_state_is_refused(self):
        with self.assertRaisesRegex(BusinessError, 'not in Karnataka'):
            check_gstin('27AAPFU0939F1ZV', 'IN-KA')

    def test_gstin_with_a_wrong_check_digit_is_refused(self):
        with self.assertRaisesRegex(BusinessError, 'not a valid GSTIN'):
            check_gstin('27AAPFU0939F1ZW', 'IN-MH')

    def test_gstin_is_compacted_and_optional(self):
        self.assertEqual(check_gstin('27 aapfu0939f1zv', 'IN-MH'),
            '27AAPFU0939F1ZV')
        self.assertIsNone(check("Acme", 'MH', '  ').gstin)

    def test_pin_code_is_six_digits_not_starting_with_0(self):
        self.assertEqual(check("Acme", 'KA', postal_code='560 001',
                street=" 12 MG Road ", city="Bengaluru").postal_code,
            '560001')
        for pin in ['56001', '060001', '5600O1']:
            with self.assertRaisesRegex(BusinessError, 'not a PIN code'):
                check("Acme", 'KA', postal_code=pin)


class SecretSettingTestCase(unittest.TestCase):

    def test_demo_value_is_refused_only_on_a_site_that_is_not_a_demo(self):
        demo_secret = DEMO_VALUES['whatsapp_app_secret']
        self.assertIsNone(refusal('whatsapp_app_secret', demo_secret, True))
        self.assertIn('demo value',
            refusal('whatsapp_app_secret', demo_secret, False))

    def test_empty_secret_is_refused_even_on_a_demo(self):
        self.assertIn('empty', refusal('link_secret', '', True))

    def test_demo_values_are_those_of_the_demo_sites_file(self):
        config = configparser.ConfigParser(interpolation=None)
        config.read(TEMPLATE)
        self.assertEqual(
            {name: config.get('kraya_crm', name) for name in DEMO_VALUES},
            DEMO_VALUES)
        self.assertEqual(config.get('kraya_crm', 'demo'), 'True')
