"""./crm backup of a running site while reps keep writing, and ./crm
restore of it as a new site: every lead and message committed before the
backup began is in the copy as it was, nothing in the copy is torn, and
the copy runs."""
import hashlib
import os
import subprocess
import sys
import threading
import time

from kraya_site import sites

from .conftest import RunningSite, eventually, free_port, serving
from .rpc import RpcError

# The tables whose rows the copy must hold, and the one compared whole.
TABLES = ['crm_lead', 'crm_message', 'crm_deal', 'crm_task', 'crm_lead_consent',
    'party_party', 'crm_enrollment']


def crm(*args):
    return subprocess.run([sys.executable, '-m', 'kraya_site.cli', *args],
        env=dict(os.environ, KRAYA_ROOT=str(sites.ROOT)), capture_output=True,
        text=True, cwd=sites.ROOT, timeout=600)


class Writer(threading.Thread):
    "A rep typing in leads, one after the other, until stopped."

    def __init__(self, session):
        super().__init__(daemon=True)
        self.session = session
        self.created = []
        self.done = threading.Event()

    def run(self):
        number = 0
        while not self.done.is_set():
            number += 1
            try:
                self.created += self.session.model('crm.lead', 'create', [{
                            'name': f"Walk-in {number}",
                            'phone': f'+9196{os.getpid() % 10 ** 4:04d}'
                            f'{number:04d}',
                            'city': 'Thane', 'notes': "Wants a 2 BHK"}])
            except RpcError:
                # Busy (SQLite's one writer): the rep saves again.
                time.sleep(0.1)

    def stop(self):
        self.done.set()
        self.join(timeout=60)


def checksums(running, table, up_to_id):
    "{id: sha256 of the row} of the rows up to an id, read past Tryton."
    rows = running.sql(f'SELECT * FROM {table} WHERE id <= %s ORDER BY id',
        (up_to_id,))
    return {row[0]: hashlib.sha256(repr(row).encode()).hexdigest()
        for row in rows}


def counts(running, tables, up_to):
    return {table: running.sql(f'SELECT count(*) FROM {table} WHERE id <= %s',
            (up_to[table],))[0][0] for table in tables}


def test_backup_of_a_site_under_writes_restores_as_a_new_site(
        crm_site, tmp_path):
    rep = crm_site.login('rep')
    settled = eventually(lambda: not crm_site.sql(
            'SELECT count(*) FROM ir_queue WHERE finished_at IS NULL')[0][0],
        timeout=60)
    assert settled, "the worker never caught up"
    # Everything up to these ids was written before the backup began.
    before = {table: crm_site.sql(f'SELECT COALESCE(max(id), 0) FROM {table}'
            )[0][0] for table in TABLES}
    writer = Writer(rep)
    writer.start()
    try:
        assert eventually(lambda: len(writer.created) >= 3, timeout=60)
        backed_up = crm('backup', '--site', str(crm_site.site.path),
            '--out', str(tmp_path))
        during = len(writer.created)
    finally:
        writer.stop()
    assert backed_up.returncode == 0, backed_up.stderr
    archive, = tmp_path.glob('*.kraya-backup.tar.gz')
    assert during > 3, "no lead was written while the backup ran"

    name = f'restored_{os.getpid()}'
    target = crm_site.site.path.parent / name
    restored = crm('restore', str(archive), '--site', str(target),
        '--listen', f'127.0.0.1:{free_port()}')
    assert restored.returncode == 0, restored.stderr
    copy = sites.Site(name, root=target.parent)
    try:
        assert copy.database == name and copy.database_exists()
        copied = RunningSite(copy, [], None, None)
        # Every row from before the backup, and as it was.
        assert counts(copied, TABLES, before) == counts(
            crm_site, TABLES, before)
        assert checksums(copied, 'crm_lead', before['crm_lead']) \
            == checksums(crm_site, 'crm_lead', before['crm_lead'])
        # What the rep wrote meanwhile: a prefix of it, never a torn lead.
        leads = [i for i, in copied.sql(
                'SELECT id FROM crm_lead WHERE id > %s ORDER BY id',
                (before['crm_lead'],))]
        assert leads == writer.created[:len(leads)]
        orphans = copied.sql('SELECT count(*) FROM crm_message m WHERE '
            'm.lead IS NOT NULL AND NOT EXISTS (SELECT 1 FROM crm_lead l '
            'WHERE l.id = m.lead)')[0][0]
        assert orphans == 0
        with serving(copy, tmp_path / 'restored.log'):
            manager = copied.login('manager')
            assert manager.search_count('crm.lead', [('city', '=', 'Thane')]
                ) >= len([i for i in leads])
    finally:
        copy.drop()


def test_restore_refuses_a_site_that_exists(crm_site, tmp_path):
    backed_up = crm('backup', '--site', str(crm_site.site.path),
        '--out', str(tmp_path / 'copy.kraya-backup.tar.gz'))
    assert backed_up.returncode == 0, backed_up.stderr
    again = crm('restore', str(tmp_path / 'copy.kraya-backup.tar.gz'),
        '--site', str(crm_site.site.path))
    assert again.returncode == 1
    assert 'already exists' in again.stderr
    assert crm_site.login('manager').search_count('crm.lead', []) > 0


def test_restore_of_a_file_that_is_no_backup_says_so(tmp_path):
    (tmp_path / 'notes.txt').write_text("Not a backup")
    answer = crm('restore', str(tmp_path / 'notes.txt'), '--site',
        str(tmp_path / 'nothing'))
    assert answer.returncode == 1
    assert 'not a Kraya CRM backup' in answer.stderr
    assert not (tmp_path / 'nothing').exists()
