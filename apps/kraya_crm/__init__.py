# Kraya CRM: leads, deals and follow-ups for small Indian sales teams.
# The classes are registered from tryton.cfg.
