"""The permission matrix, over real JSON-RPC: each role of the demo site
against the one declared table (apps/kraya_crm/tests/permissions.py) of
every model, button, wizard and hidden field.

Each operation is tried with nothing to act on (`write([], {})`,
`delete([])`, a button on no record...): Tryton checks the model access,
the button's groups and the wizard's groups before it looks at the
records, so a refusal or a pass is the permission itself and the demo's
data is left as it was. Fields and rows are read on real records."""
import pytest

from kraya_crm.tests import permissions

from .rpc import RpcError

NOBODY_PASSWORD = 'nobody-in-no-crm-group'
# (letter, method, arguments) of the model operations.
OPERATIONS = [
    ('r', 'read', ([], ['id'])),
    ('r', 'search', ([], 0, 1, None)),
    ('w', 'write', ([], {})),
    ('c', 'create', ([],)),
    ('d', 'delete', ([],)),
    ]


def refused(error):
    "Whether the server said the user may not, not that something failed."
    return 'not allowed' in error.message


@pytest.fixture(scope='module')
def roles(crm_site, admin):
    "{role: RPC session}: the demo's users and one in no CRM group."
    if not admin.search('res.user', [('login', '=', 'nobody')]):
        company = admin.context['company']
        admin.model('res.user', 'create', [{
                    'login': 'nobody', 'name': "Neha Store Keeper",
                    'password': NOBODY_PASSWORD, 'company': company,
                    'companies': [('add', [company])]}])
    return {role: crm_site.login(role,
            NOBODY_PASSWORD if role == 'nobody' else None)
        for role in permissions.ROLES}


def attempt(call):
    "True when done, False when refused; any other error is raised."
    try:
        call()
    except RpcError as error:
        if refused(error):
            return False
        raise
    return True


def letters_of(session, model):
    "The operations the session may do on the model, as letters."
    done = set()
    for letter, method, args in OPERATIONS:
        if model in permissions.REPORTS and letter != 'r':
            continue
        if model in permissions.SINGLETONS and method != 'write':
            args = ([1], ['id']) if method == 'read' else args
            if letter != 'r':
                continue
        if attempt(lambda: session.model(model, method, *args)):
            done.add(letter)
        elif letter in done:
            # read allowed but search refused, or the reverse.
            done.add('?')
    return ''.join(sorted(done, key='rwcd?'.index))


def test_model_access_of_every_role_is_as_declared(roles):
    found = {model: {role: letters_of(session, model)
            for role, session in roles.items()}
        for model in permissions.MODELS}
    expected = {model: {role: ''.join(letter for letter in row[role]
                if model not in permissions.REPORTS or letter == 'r')
            for role in roles}
        for model, row in permissions.MODELS.items()}
    # Singletons are never created or deleted: only r and w are tried.
    for model in permissions.SINGLETONS:
        for role in roles:
            expected[model][role] = ''.join(
                letter for letter in expected[model][role] if letter in 'rw')
    differences = [f'{model} {role}: declared {expected[model][role]!r}, '
            f'found {found[model][role]!r}'
        for model in found for role in roles
        if found[model][role] != expected[model][role]]
    assert not differences, '\n'.join(differences)


def test_tables_of_relations_are_not_on_rpc(roles):
    answers = {}
    for model in permissions.RELATIONS:
        for role, session in roles.items():
            try:
                session.model(model, 'search', [], 0, 1, None)
            except RpcError as error:
                answers[model, role] = error.type
            else:
                answers[model, role] = 'answered'
    assert set(answers.values()) == {'HTTP 403'}, answers


def test_buttons_answer_only_the_roles_declared(roles):
    differences = []
    for (model, button), allowed in permissions.BUTTONS.items():
        for role, session in roles.items():
            done = attempt(lambda: session.model(model, button, []))
            if done != (role in allowed):
                differences.append(f'{model}.{button} {role}: '
                    f'{"pressed" if done else "refused"}')
    assert not differences, '\n'.join(differences)


def test_wizards_start_only_for_the_roles_declared(roles):
    differences = []
    for wizard, allowed in permissions.WIZARDS.items():
        for role, session in roles.items():
            try:
                session_id, *_ = session.call(
                    f'wizard.{wizard}.create', session.context)
            except RpcError as error:
                if not refused(error):
                    raise
                done = False
            else:
                session.call(f'wizard.{wizard}.delete', session_id,
                    session.context)
                done = True
            if done != (role in allowed):
                differences.append(
                    f'{wizard} {role}: {"started" if done else "refused"}')
    assert not differences, '\n'.join(differences)


def test_hidden_fields_and_rows_are_refused_to_their_roles(roles, admin):
    differences = []
    for (model, field), hidden_from in permissions.HIDDEN.items():
        for role, session in roles.items():
            if not permissions.MODELS[model][role]:
                continue
            # A record the role may read: its own first one.
            reachable = session.search(model if field != '*' else 'crm.lead',
                [], limit=1 if field != '*' else None)
            assert reachable, f'{role} reads no {model} to check {field} on'
            if field == '*':
                rows = admin.search(model, [('lead', 'in', reachable)])
                assert rows, f'no {model} on the leads {role} reads'
                seen = session.search(model, [('id', 'in', rows)])
                read = attempt(lambda: session.model(
                        model, 'read', rows[:1], ['id']))
                shown = bool(seen) or read
            else:
                shown = attempt(lambda: session.model(
                        model, 'read', reachable, [field]))
            if shown == (role in hidden_from):
                differences.append(f'{model}.{field} {role}: '
                    f'{"shown" if shown else "hidden"}')
    assert not differences, '\n'.join(differences)
