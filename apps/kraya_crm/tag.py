"""Tags: a rep's or a rule's own label on a lead or a deal ("Big budget",
"NRI buyer", "Referral"), to filter on and to see at a glance."""
from trytond.model import DeactivableMixin, ModelSQL, ModelView, Unique, fields
from trytond.pool import PoolMeta


class Tag(DeactivableMixin, ModelSQL, ModelView):
    "A label put on leads and deals."
    __name__ = 'crm.tag'
    __string__ = "Tag"
    name = fields.Char("Name", required=True, translate=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints.append(('name_unique', Unique(t, t.name),
                'kraya_crm.msg_tag_name_unique'))
        cls._order = [('name', 'ASC'), ('id', 'ASC')]


class LeadTag(ModelSQL):
    "Lead - Tag"
    __name__ = 'crm.lead-crm.tag'
    lead = fields.Many2One('crm.lead', "Lead", required=True,
        ondelete='CASCADE')
    tag = fields.Many2One('crm.tag', "Tag", required=True, ondelete='CASCADE')


class DealTag(ModelSQL):
    "Deal - Tag"
    __name__ = 'crm.deal-crm.tag'
    deal = fields.Many2One('crm.deal', "Deal", required=True,
        ondelete='CASCADE')
    tag = fields.Many2One('crm.tag', "Tag", required=True, ondelete='CASCADE')


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'
    tags = fields.Many2Many('crm.lead-crm.tag', 'lead', 'tag', "Tags")


class Deal(metaclass=PoolMeta):
    __name__ = 'crm.deal'
    tags = fields.Many2Many('crm.deal-crm.tag', 'deal', 'tag', "Tags")
