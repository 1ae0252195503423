"""./crm import against a real site, as a user runs it: the rows land in
the site's database, the bad ones in FILE.errors.csv."""
import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kraya_site import business, sites

ROOT = Path(__file__).resolve().parent.parent
TEST_DATABASE = os.environ.get('KRAYA_TEST_DATABASE', '').rstrip('/')

# Count the site's leads, and a few columns of one, as JSON.
QUERY = textwrap.dedent('''
    import json, sys
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    Pool(sys.argv[1]).init()
    with Transaction().start(sys.argv[1], 0, readonly=True):
        Lead = Pool().get('crm.lead')
        leads = Lead.search([], order=[('id', 'ASC')])
        print(json.dumps([[l.name, l.phone, l.email,
                    l.subdivision.code if l.subdivision else None,
                    l.source.code if l.source else None] for l in leads]))
    ''')

CSV = (
    "Customer Name,Mobile No.,E-mail,City,State\r\n"
    "Asha Kulkarni,9.19876543210E+11,Asha@Example.in,Pune,MH\r\n"
    "\r\n"
    "Ravi Shah,12345,ravi@example.in,Surat,Gujarat\r\n"
    "Asha K,098765 43210,,Pune,Maharashtra\r\n"
    "Meera Iyer,+91 91234 56789,,Chennai,Tamil Nadu\r\n")


def python(site, code, *args):
    env = site.environ()
    env['TRYTOND_CONFIG'] = str(site.config_file)
    return subprocess.run([sys.executable, '-c', code, site.database, *args],
        check=True, env=env, cwd=ROOT, stdout=subprocess.PIPE,
        text=True).stdout


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp('import-sites')
    name = f'kraya_import_{os.getpid()}'
    db_uri = f'{TEST_DATABASE}/{name}' if TEST_DATABASE else None
    site = sites.new_site(name, db_uri=db_uri, demo=False,
        admin_password='a-Strong-pass-123', root=root,
        business=business.check("Shree Ganesh Realty", 'MH'))
    try:
        yield site
    finally:
        site.drop()


def leads(site):
    import json
    return json.loads(python(site, QUERY).strip().splitlines()[-1])


def crm_import(site, path, *options):
    return subprocess.run(
        ['./crm', 'import', str(path), '--site', str(site.path), *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_dry_run_reports_and_leaves_the_site_unchanged(site, tmp_path):
    path = tmp_path / 'expo.csv'
    path.write_text(CSV, encoding='utf-8-sig')
    before = leads(site)
    result = crm_import(site, path, '--source', 'walk-in', '--dry-run')
    assert result.returncode == 0, result.stderr
    assert "Dry run: nothing was saved" in result.stdout
    assert leads(site) == before
    assert (tmp_path / 'expo.errors.csv').exists()


def test_import_puts_good_rows_in_the_site_and_bad_ones_in_the_error_file(
        site, tmp_path):
    path = tmp_path / 'expo.csv'
    path.write_text(CSV, encoding='utf-8-sig')
    result = crm_import(site, path, '--source', 'walk-in')
    assert result.returncode == 0, result.stderr
    assert leads(site) == [
        ["Asha Kulkarni", '+919876543210', 'asha@example.in', 'IN-MH',
            'walk-in'],
        ["Meera Iyer", '+919123456789', None, 'IN-TN', 'walk-in'],
        ]
    assert "rows/s" in result.stderr
    with open(tmp_path / 'expo.errors.csv', encoding='utf-8-sig') as file:
        problem, = csv.DictReader(file)
    assert (problem['Row'], problem['Column']) == ('4', 'Mobile No.')
    assert '12345' in problem['Problem']
