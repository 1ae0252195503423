"""Monthly sales targets: how much a rep, or a sales team, should win in a
month, in the company's currency. Managers set them under CRM ›
Configuration; a rep reads their own. The dashboard (dashboard.py) shows
the month's won value against them."""
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.modules.currency.fields import Monetary
from trytond.pyson import Bool, Eval, If

from .exceptions import SalesTargetError
from .monthly import MonthlyAmount


class SalesTarget(MonthlyAmount, ModelSQL, ModelView):
    "What a rep or a team should win in a month."
    __name__ = 'crm.sales.target'
    __string__ = "Sales Target"
    company = fields.Many2One(
        'company.company', "Company", required=True,
        domain=[
            ('id', If(Eval('context', {}).contains('company'), '=', '!='),
                Eval('context', {}).get('company', -1)),
            ])
    user = fields.Many2One('res.user', "Rep",
        states={'required': ~Bool(Eval('team')),
            'invisible': Bool(Eval('team'))},
        help="The rep this target is for (or a team, not both).")
    team = fields.Many2One('crm.team', "Team",
        states={'required': ~Bool(Eval('user')),
            'invisible': Bool(Eval('user'))},
        help="The sales team this target is for (or a rep, not both).")
    amount = Monetary("Target", currency='currency', digits='currency',
        required=True, help="The value of deals to win in the month, in "
        "the company's currency.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('month', 'DESC'), ('team', 'ASC NULLS FIRST'),
            ('id', 'ASC')]

    def get_rec_name(self, name):
        who = (self.user or self.team).rec_name if (
            self.user or self.team) else ''
        return f"{who} {self.month:%b %Y}" if self.month else who

    @classmethod
    def validate_fields(cls, targets, field_names):
        super().validate_fields(targets, field_names)
        cls.check_one_per_month(targets)

    @classmethod
    def check_one_per_month(cls, targets):
        "A rep or a team has one target a month, and each is for one of them."
        for target in targets:
            if bool(target.user) == bool(target.team):
                raise SalesTargetError(gettext(
                        'kraya_crm.msg_sales_target_user_or_team'))
            if target.amount is not None and target.amount < 0:
                raise SalesTargetError(gettext(
                        'kraya_crm.msg_sales_target_negative'))
            others = cls.search([
                    ('id', '!=', target.id),
                    ('company', '=', target.company.id),
                    ('month', '=', target.month),
                    ('user', '=', target.user.id if target.user else None),
                    ('team', '=', target.team.id if target.team else None),
                    ], limit=1)
            if others:
                raise SalesTargetError(gettext(
                        'kraya_crm.msg_sales_target_unique',
                        target=target.rec_name))
