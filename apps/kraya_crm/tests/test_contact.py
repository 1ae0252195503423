"Phone, email and rupee formatting, without a database."
import random
import unittest
from decimal import Decimal

import phonenumbers

from kraya_crm.contact import (
    InvalidPhone, format_inr, normalize_email, normalize_phone)


class NormalizePhoneTestCase(unittest.TestCase):

    def test_indian_mobile_written_any_way_is_one_number(self):
        for written in [
                '9876543210', '09876543210', '+91 98765 43210',
                '98765-43210', '(+91) 98765-43210', '919876543210',
                '0091 9876543210', '+919876543210']:
            with self.subTest(written=written):
                self.assertEqual(normalize_phone(written), '+919876543210')

    def test_number_already_in_e164_is_kept_only_when_valid(self):
        "The shortcut for E.164 numbers agrees with phonenumbers' check."
        rng = random.Random(91)
        for first in '0123456789':
            for _ in range(300):
                text = '+91' + first + '%09d' % rng.randrange(10 ** 9)
                valid = phonenumbers.is_valid_number(
                    phonenumbers.parse(text, None))
                with self.subTest(text=text, valid=valid):
                    if valid:
                        self.assertEqual(normalize_phone(text), text)
                    else:
                        with self.assertRaises(InvalidPhone):
                            normalize_phone(text)

    def test_excel_scientific_notation_is_undone(self):
        self.assertEqual(
            normalize_phone('9.19876543210E+11'), '+919876543210')

    def test_foreign_number_keeps_its_country(self):
        self.assertEqual(normalize_phone('+44 20 7946 0958'), '+442079460958')

    def test_landline_with_std_code(self):
        self.assertEqual(normalize_phone('022 2345 6789'), '+912223456789')

    def test_empty_is_none(self):
        for empty in [None, '', '   ']:
            self.assertIsNone(normalize_phone(empty))

    def test_garbage_is_refused(self):
        for bad in ['12345', 'call me', '98765432101234']:
            with self.subTest(bad=bad), self.assertRaises(InvalidPhone):
                normalize_phone(bad)


class NormalizeEmailTestCase(unittest.TestCase):

    def test_trimmed_and_lower_cased(self):
        self.assertEqual(
            normalize_email('  Priya.Sharma@Example.IN '),
            'priya.sharma@example.in')

    def test_empty_is_none(self):
        self.assertIsNone(normalize_email('  '))


class FormatInrTestCase(unittest.TestCase):

    def test_indian_grouping(self):
        self.assertEqual(format_inr(Decimal('500000')), '₹5,00,000')
        self.assertEqual(format_inr(Decimal('14500000')), '₹1,45,00,000')
        self.assertEqual(format_inr(Decimal('999')), '₹999')

    def test_paise_only_when_present(self):
        self.assertEqual(format_inr(Decimal('1234.5')), '₹1,234.50')

    def test_negative(self):
        self.assertEqual(format_inr(Decimal('-100000')), '-₹1,00,000')
