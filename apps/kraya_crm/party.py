from trytond.model import fields
from trytond.pool import PoolMeta


class Party(metaclass=PoolMeta):
    __name__ = 'party.party'
    crm_leads = fields.One2Many('crm.lead', 'party', "Leads", readonly=True)
    crm_deals = fields.One2Many('crm.deal', 'party', "Deals", readonly=True)
