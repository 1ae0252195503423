"""A site listening beyond this machine refuses to start with the demo's
public secrets or passwords: `./crm start` on a copy of the running demo
site's settings (its database shared, read only), listening on 0.0.0.0."""
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from kraya_site import exposure, sites

ROOT = Path(__file__).resolve().parent.parent


def copy_of(site, listen, name=None, root=None):
    "A site folder whose settings are site's but for [web] listen."
    copy = sites.Site(name or site.name, root=root)
    copy.path.mkdir(parents=True)
    copy.config_file.write_text(re.sub(r'^listen = .*$', f'listen = {listen}',
            site.config_file.read_text(), count=1, flags=re.MULTILINE))
    shutil.copy(site.path / '.module-fingerprint', copy.path)
    if site.is_sqlite:
        sqlite = f'{site.database}.sqlite'
        (copy.path / sqlite).symlink_to((site.path / sqlite).resolve())
    return copy


@pytest.fixture
def exposed_demo(crm_site):
    "The demo's settings, listening on every interface, as sites/NAME."
    name = f'exposed_{uuid.uuid4().hex[:8]}'
    copy = copy_of(crm_site.site, '0.0.0.0:8999', name=name)
    yield copy
    # The folder only: the database is the running demo's.
    shutil.rmtree(copy.path)


def test_listen_addresses_of_this_machine_only(crm_site):
    assert [exposure.is_loopback(l) for l in ['127.0.0.1:8000',
            'localhost:80', '[::1]:8000', '127.0.0.5:1', '0.0.0.0:8000',
            ':8000', '*:8000', '192.168.1.5:8000', 'crm.example.in:443']] \
        == [True] * 4 + [False] * 5


def test_start_refuses_the_demo_listening_beyond_this_machine(exposed_demo):
    started = subprocess.run(['./crm', 'start', '--site', exposed_demo.name],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=300)
    assert started.returncode != 0
    assert 'listens on 0.0.0.0:8999' in started.stderr
    # (Every site, the demo too, has its own link and inbound secrets.)
    for name in ['whatsapp_app_secret', 'whatsapp_verify_token',
            'whatsapp_access_token']:
        assert f'[kraya_crm] {name} is the public demo value' \
            in started.stderr
    for login in ['admin', 'manager', 'rep']:
        assert f'user "{login}" has the demo password' in started.stderr


def test_the_demo_on_this_machine_only_may_start(crm_site, tmp_path):
    assert exposure.problems(
        copy_of(crm_site.site, '127.0.0.1:8999', root=tmp_path)) == []
