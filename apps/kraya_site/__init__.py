"""The tooling behind ./crm: sites (trytond.conf, the database, the desk),
starting them under supervisord, new-site's business setup, the demo
loader, the importer's command line, the benchmarks and the SQLite queue
worker. It works from a checkout; the Tryton module is kraya_crm.

Import kraya_crm only inside functions: importing it imports trytond,
which reads its configuration (and picks its database backend) once, when
first imported, so a command must point it at the site first
(import_cli.use_site)."""
