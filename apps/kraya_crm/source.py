from trytond.model import DeactivableMixin, ModelSQL, ModelView, Unique, fields


class Source(DeactivableMixin, ModelSQL, ModelView):
    "Where leads come from: WhatsApp, a web form, an import, a portal."
    __name__ = 'crm.source'
    __string__ = "Lead Source"
    name = fields.Char("Name", required=True, translate=True)
    code = fields.Char(
        "Code", required=True,
        help="A short key used by imports and capture URLs.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('code_unique', Unique(t, t.code), 'kraya_crm.msg_source_code_unique'),
            ]

    @classmethod
    def get_by_code(cls, code):
        sources = cls.search([('code', '=', code)], limit=1)
        return sources[0] if sources else None
