"""A company's amount for a month, as the sales targets (target.py) and
the lead sources' costs (source_cost.py) keep them: the month as its first
day, the amount in the company's currency."""
import datetime as dt

from trytond.model import fields
from trytond.transaction import Transaction


def first_of_month(date):
    return date.replace(day=1) if date else date


class MonthlyAmount:
    "A company's month, with the currency of its amount."
    __slots__ = ()
    company = fields.Many2One('company.company', "Company", required=True)
    month = fields.Date("Month", required=True,
        help="Any day of the month: it is kept as the month's first day.")
    currency = fields.Function(fields.Many2One(
            'currency.currency', "Currency"), 'on_change_with_currency')

    @staticmethod
    def default_company():
        return Transaction().context.get('company')

    @staticmethod
    def default_month():
        return first_of_month(dt.date.today())

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency.id if self.company else None

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if values.get('month'):
            values['month'] = first_of_month(values['month'])
        return values
