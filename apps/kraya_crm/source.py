from trytond.model import DeactivableMixin, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool


class Source(DeactivableMixin, ModelSQL, ModelView):
    "Where leads come from: WhatsApp, a web form, an import, a portal."
    __name__ = 'crm.source'
    __string__ = "Lead Source"
    name = fields.Char("Name", required=True, translate=True)
    code = fields.Char(
        "Code", required=True,
        help="A short key used by imports and capture URLs.")
    team = fields.Many2One('crm.team', "Team", ondelete='SET NULL',
        help="The sales team whose inbox gets the source's new leads; "
        "empty: the only team, when there is just one.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('code_unique', Unique(t, t.code), 'kraya_crm.msg_source_code_unique'),
            ]

    @property
    def team_for_new_leads(self):
        Team = Pool().get('crm.team')
        if self.team:
            return self.team
        teams = Team.search([], limit=2)
        return teams[0] if len(teams) == 1 else None

    @classmethod
    def get_by_code(cls, code):
        sources = cls.search([('code', '=', code)], limit=1)
        return sources[0] if sources else None
