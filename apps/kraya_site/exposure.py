"""Whether a site may listen beyond this machine: not with what anyone can
read in this repository, the demo's secrets (sites/default/trytond.conf)
and the demo's passwords (each demo user's is its login, admin's "admin").
./crm start refuses such a site and says what to change.

Like the rest of the tooling it imports kraya_crm (and so trytond, which
picks its configuration once) only inside functions."""
import contextlib
import ipaddress
import sqlite3

# The demo's users (kraya_site.demo.USERS) and the admin.
DEMO_LOGINS = ('admin', 'manager', 'rep', 'rep2', 'agent', 'accountant')


def is_loopback(listen):
    "Whether [web] listen (host:port) takes requests from this machine only."
    host = listen.rsplit(':', 1)[0].strip('[]')
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # '', '*', 0.0.0.0 is an address, a host name may be anything.
        return False


def demo_secrets(site):
    "The secret settings of the site that still hold the public demo value."
    from kraya_crm.settings import DEMO_VALUES, SECRETS
    config = site.config()
    return [name for name in SECRETS
        if config.get('kraya_crm', name, fallback='') == DEMO_VALUES[name]]


def _password_hashes(site):
    query = ("SELECT login, password_hash FROM res_user WHERE login IN (%s) "
        "AND password_hash IS NOT NULL AND active" % ', '.join(
            f"'{login}'" for login in DEMO_LOGINS))
    if site.is_sqlite:
        with contextlib.closing(sqlite3.connect(
                    site.path / f'{site.database}.sqlite')) as database:
            return database.execute(query).fetchall()
    import psycopg
    with psycopg.connect(f"{site.database_uri.rstrip('/')}/"
            f"{site.database}") as database:
        return database.execute(query).fetchall()


def demo_passwords(site):
    "The logins whose password is the demo's (the login itself)."
    from trytond.res.user import PASSWORD_HASH
    return [login for login, hash_ in _password_hashes(site)
        if PASSWORD_HASH.verify(login, hash_)]


def problems(site):
    "What stops the site from listening where it does; [] when nothing."
    if is_loopback(site.listen):
        return []
    found = [f"[kraya_crm] {name} is the public demo value"
        for name in demo_secrets(site)]
    found += [f'user "{login}" has the demo password "{login}"'
        for login in demo_passwords(site)]
    return found
