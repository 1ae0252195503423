"""What a lead source cost in a month (the IndiaMART subscription, the
month's Facebook ads, a property portal's package), entered by a manager,
so that the Lead Sources report shows the cost per lead and per deal won."""
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import PoolMeta

from .monthly import MonthlyAmount


class SourceCost(MonthlyAmount, ModelSQL, ModelView):
    "The cost of a lead source in a month."
    __name__ = 'crm.source.cost'
    __string__ = "Lead Source Cost"
    source = fields.Many2One('crm.source', "Source", required=True,
        ondelete='CASCADE')
    amount = Monetary("Cost", currency='currency', digits='currency',
        required=True, domain=[('amount', '>=', 0)],
        help="What the source cost in the month, in the company's currency.")
    notes = fields.Char("Notes", help="e.g. \"IndiaMART Gold, 1 of 12\".")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('source_month_unique', Unique(t, t.company, t.source, t.month),
                'kraya_crm.msg_source_cost_unique'),
            ]
        cls._order = [('month', 'DESC'), ('source', 'ASC'), ('id', 'ASC')]

    def get_rec_name(self, name):
        return f"{self.source.rec_name} {self.month:%b %Y}"


class Source(metaclass=PoolMeta):
    __name__ = 'crm.source'
    costs = fields.One2Many('crm.source.cost', 'source', "Costs",
        help="What the source cost, month by month.")
