"""Kraya CRM: leads, deals and follow-ups for small Indian sales teams.

The models are registered from tryton.cfg; the HTTP endpoints are in
routes.py and the integration API in api.py, imported here as Tryton's own
modules do."""
from . import api, routes

__all__ = ['api', 'routes']
