from trytond.model import (
    DeactivableMixin, ModelSQL, ModelView, fields, sequence_ordered)


class Stage(DeactivableMixin, sequence_ordered(), ModelSQL, ModelView):
    "A step of the sales pipeline a deal moves through."
    __name__ = 'crm.stage'
    __string__ = "Pipeline Stage"
    name = fields.Char("Name", required=True, translate=True)
    probability = fields.Integer(
        "Probability %", required=True,
        domain=[('probability', '>=', 0), ('probability', '<=', 100)],
        help="The chance a deal in this stage is won, for the forecast.")
    kind = fields.Selection([
            ('open', "Open"),
            ('won', "Won"),
            ('lost', "Lost"),
            ], "Kind", required=True,
        help="Won and lost stages close the deal.")
    color = fields.Char(
        "Colour", help="The colour of the stage on the pipeline board, "
        "as #rrggbb.")

    @staticmethod
    def default_probability():
        return 10

    @staticmethod
    def default_kind():
        return 'open'

    @staticmethod
    def default_color():
        return '#6b7280'

    @classmethod
    def first_open(cls):
        "The stage a new deal starts in."
        stages = cls.search([('kind', '=', 'open')], limit=1)
        return stages[0] if stages else None
