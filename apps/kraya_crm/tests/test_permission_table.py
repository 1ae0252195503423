"""The permission table (permissions.py) declares every model, button and
wizard of the pool: one added without an entry fails here, before the
matrix over RPC (tests/test_permission_matrix.py) can miss it."""
import unittest

from trytond.model import ModelSingleton, ModelSQL, ModelStorage, ModelView
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from . import permissions


def ours(name):
    return name.startswith('crm.') or name in permissions.OTHER_MODELS


class PermissionTableTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    def models(self):
        return {name: Model for name, Model in Pool().iterobject()
            if ours(name)}

    @with_transaction()
    def test_every_stored_model_has_a_row_for_every_role(self):
        models = self.models()
        stored = {name for name, Model in models.items()
            if issubclass(Model, ModelStorage)
            and issubclass(Model, ModelView)}
        self.assertEqual(sorted(stored - set(permissions.MODELS)), [],
            "models nobody decided the access of")
        self.assertEqual(sorted(set(permissions.MODELS) - stored), [],
            "rows of models the pool no longer has")
        self.assertEqual(permissions.RELATIONS, {name
                for name, Model in models.items()
                if issubclass(Model, ModelStorage)
                and not issubclass(Model, ModelView)})
        for name, row in permissions.MODELS.items():
            self.assertEqual(set(row), set(permissions.ROLES), name)

    @with_transaction()
    def test_reports_and_singletons_are_declared_as_such(self):
        models = self.models()
        self.assertEqual(permissions.REPORTS, {name
                for name, Model in models.items()
                if issubclass(Model, ModelSQL)
                and callable(getattr(Model, 'table_query', None))})
        self.assertEqual(permissions.SINGLETONS, {name
                for name, Model in models.items()
                if issubclass(Model, ModelSingleton)})

    @with_transaction()
    def test_models_storing_nothing_offer_only_what_views_offer(self):
        view_only = {name: Model for name, Model in self.models().items()
            if not issubclass(Model, ModelStorage)}
        self.assertEqual(set(view_only), permissions.VIEW_ONLY)
        # A wizard's form of Tryton itself: what any view answers.
        plain = set(Pool().get('res.user.config.start').__rpc__)
        for name, Model in view_only.items():
            # The methods giving a selection field its options.
            selections = {field.selection for field in Model._fields.values()
                if isinstance(getattr(field, 'selection', None), str)}
            with self.subTest(model=name):
                self.assertEqual(set(Model.__rpc__) - plain - selections, set(),
                    f"{name} answers RPC calls of its own")

    @with_transaction()
    def test_every_button_is_declared(self):
        buttons = {(name, button) for name, Model in self.models().items()
            for button in getattr(Model, '_buttons', {})}
        self.assertEqual(sorted(buttons - set(permissions.BUTTONS)), [],
            "buttons nobody decided who may press")
        self.assertEqual(sorted(set(permissions.BUTTONS) - buttons), [])

    @with_transaction()
    def test_every_wizard_is_declared(self):
        wizards = {name for name, _ in Pool().iterobject(type='wizard')
            if ours(name)}
        self.assertEqual(wizards, set(permissions.WIZARDS))

    @with_transaction()
    def test_every_restricted_field_is_declared(self):
        "A field access record is a decision: the table must say it."
        FieldAccess = Pool().get('ir.model.field.access')
        restricted = {(a.model, a.field)
            for a in FieldAccess.search([('group', '=', None),
                    ('perm_read', '=', False)])
            if ours(a.model)}
        declared = {key for key in permissions.HIDDEN if key[1] != '*'}
        self.assertEqual(restricted, declared)
