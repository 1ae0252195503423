"""A site's processes under a supervisor, so that one that dies does not
take the others down. The Procfile is the one list of processes:
./crm start writes sites/<name>/supervisord.conf from it at every start and
runs supervisord in the foreground; ./crm service-files writes the same
processes as systemd units for production.

- A process that dies after STARTSECS is started again at once; one that
  dies sooner is crash-looping and backs off (supervisord's BACKOFF: 1 s,
  2 s, ... up to CRASH_RETRIES tries, about 80 minutes, then it gives up).
- Stopping signals the process's whole group, so trytond-worker's and
  trytond-cron's pools go with them.
- The terminal shows every line prefixed with its process, as honcho did,
  and in plain words what the supervisor did: listen() below, a
  supervisord event listener, which also kills what a dead process left
  behind. The full logs stay in sites/<name>/logs/.
"""
import argparse
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from . import sites
from .sites import SiteError

# A process that dies sooner than this after its start is crash-looping.
STARTSECS = 10
# supervisord waits 1 s more before each try: 100 tries span 84 minutes,
# long enough to outlast a database restart.
CRASH_RETRIES = 100
# How long a process may take to stop on SIGTERM before SIGKILL.
STOP_SECONDS = 10
LISTENER = 'listener'
COLOURS = ['36', '33', '32', '35', '34', '31']


@dataclass
class Process:
    "A Procfile process of a site, its command ready to run."
    name: str
    argv: list


# The processes of the production shape ([processes] of a PostgreSQL
# site's trytond.conf): gunicorn's worker processes and their threads, and
# how many trytond-worker processes run the queue.
PROCESS_DEFAULTS = {'web_workers': 4, 'web_threads': 4, 'queue_workers': 2}


def read_procfile(path=None):
    "The Procfile's {name: command line}, in its order."
    path = path or sites.ROOT / 'Procfile'
    commands = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith('#'):
            name, command = line.split(':', 1)
            commands[name.strip()] = command.strip()
    return commands


def site_procfile(site):
    """The commands of the site's processes: the Procfile's, and on
    PostgreSQL the production shape, Procfile.production's lines in place
    of those of the same name."""
    commands = read_procfile()
    if not site.is_sqlite:
        commands.update(read_procfile(sites.ROOT / 'Procfile.production'))
    return commands


def process_settings(site, **overrides):
    """[processes] of the site's trytond.conf, each a number, with the
    defaults and the given overrides (./crm start --web-workers)."""
    config = site.config()
    values = {}
    for name, default in PROCESS_DEFAULTS.items():
        value = overrides.get(name)
        if value is None:
            value = config.get('processes', name, fallback=default)
        try:
            values[name] = int(value)
        except ValueError:
            raise SiteError(f'[processes] {name} is "{value}", not a number')
        if values[name] < 1:
            raise SiteError(f'[processes] {name} must be 1 or more')
    return values


def process_count(site, name, settings):
    "How many of the Procfile's process `name` the site runs."
    if name == 'worker' and not site.is_sqlite:
        # SQLite has one writer: one worker there.
        return settings['queue_workers']
    return 1


def procfile_variables(site, settings):
    "What the Procfile's commands may say: $KRAYA_CONFIG and friends."
    return {
        'KRAYA_CONFIG': str(site.config_file),
        'KRAYA_DATABASE': site.database,
        'KRAYA_SITE': str(site.path),
        'KRAYA_LISTEN': site.listen,
        'KRAYA_WEB_WORKERS': str(settings['web_workers']),
        'KRAYA_WEB_THREADS': str(settings['web_threads']),
        }


def site_commands(site, names, settings=None, procfile=None):
    """The named Procfile processes with the site's values in their
    commands and each program as a path in the virtualenv, so that a
    supervisor or systemd runs them without a shell between. A process the
    site runs several of is named worker-1, worker-2..."""
    commands = read_procfile(procfile) if procfile else site_procfile(site)
    settings = settings or process_settings(site)
    variables = procfile_variables(site, settings)

    def expand(word, name):
        def value(match):
            variable = match.group(1) or match.group(2)
            if variable not in variables:
                raise SiteError(f'Procfile: {name} uses ${variable}, which '
                    f'./crm does not set (it sets {", ".join(variables)})')
            return variables[variable]
        return re.sub(r'\$(?:(\w+)|\{(\w+)\})', value, word)
    processes = []
    for name in names:
        if name not in commands:
            raise SiteError(f'the Procfile has no process "{name}"')
        argv = [expand(word, name) for word in shlex.split(commands[name])]
        argv[0] = shutil.which(
            argv[0], path=os.path.dirname(sys.executable)) or argv[0]
        count = process_count(site, name, settings)
        if count == 1:
            processes.append(Process(name, argv))
        else:
            processes += [Process(f'{name}-{number}', argv)
                for number in range(1, count + 1)]
    return processes


def log_folder(site):
    return site.path / 'logs'


def supervisord_config(site, processes, colour=False):
    "supervisord.conf for running the processes in the foreground."
    logs = log_folder(site)
    socket = site.path / 'supervisor.sock'
    listener = [sys.executable, '-m', 'kraya_site.supervise', 'listen',
        '--logs', str(logs), *(p.name for p in processes)]
    if colour:
        listener.append('--colour')
    sections = {
        'supervisord': {
            'nodaemon': 'true',
            # Its log goes to the file only: the listener says it plainly.
            'silent': 'true',
            'logfile': logs / 'supervisord.log',
            'pidfile': site.path / 'supervisord.pid',
            'childlogdir': logs,
            },
        # supervisorctl -c sites/<name>/supervisord.conf status, restart ...
        'unix_http_server': {'file': socket, 'chmod': '0700'},
        'supervisorctl': {'serverurl': f'unix://{socket}'},
        'rpcinterface:supervisor': {'supervisor.rpcinterface_factory':
            'supervisor.rpcinterface:make_main_rpcinterface'},
        f'eventlistener:{LISTENER}': {
            'command': shlex.join(listener),
            'events': 'PROCESS_LOG,PROCESS_STATE',
            # A burst of requests logs faster than a terminal scrolls.
            'buffer_size': 10000,
            'autorestart': 'true',
            'stdout_logfile': 'NONE',
            # Its stdout talks to supervisord; what it prints is on stderr.
            'stderr_logfile': '/dev/stdout',
            'stderr_logfile_maxbytes': 0,
            },
        }
    for process in processes:
        sections[f'program:{process.name}'] = {
            'command': shlex.join(process.argv),
            'directory': sites.ROOT,
            'autorestart': 'true',
            'startsecs': STARTSECS,
            'startretries': CRASH_RETRIES,
            'stopsignal': 'TERM',
            'stopwaitsecs': STOP_SECONDS,
            'stopasgroup': 'true',
            'killasgroup': 'true',
            'redirect_stderr': 'true',
            'stdout_logfile': logs / f'{process.name}.log',
            'stdout_logfile_maxbytes': '10MB',
            'stdout_logfile_backups': 3,
            'stdout_events_enabled': 'true',
            # Lines reach the console as they are written.
            'environment': 'PYTHONUNBUFFERED="1"',
            }
    lines = ['; Written by ./crm start from the Procfile at every start: '
        'edits are lost.']
    for section, options in sections.items():
        lines += ['', f'[{section}]']
        # supervisord expands %(name)s in values.
        lines += [f'{key} = {str(value).replace("%", "%%")}'
            for key, value in options.items()]
    return '\n'.join(lines) + '\n'


def run(site, processes, env):
    """Run the processes under supervisord until Ctrl-C and return its exit
    status. It gets its own process group and its signals from us: it
    takes SIGHUP for "reload the configuration", but a closed terminal's
    hangup means stop."""
    log_folder(site).mkdir(exist_ok=True)
    config = site.path / 'supervisord.conf'
    colour = sys.stdout.isatty()
    config.write_text(supervisord_config(site, processes, colour=colour))
    # Its output comes through us: it reopens /dev/stdout, which would
    # write over ours in a file that ./crm start > file is writing.
    supervisord = subprocess.Popen(
        [sites.bin_path('supervisord'), '-c', str(config)], env=env,
        cwd=sites.ROOT, process_group=0, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    # The listener may be stopped before it could say who it stopped.
    console = Console([p.name for p in processes], log_folder(site),
        colour=colour, out=sys.stdout)

    def stop(received, sent):
        console.say('system', f'{signal.Signals(received).name}: '
            'stopping every process')
        supervisord.send_signal(sent)
    for received, sent in [(signal.SIGINT, signal.SIGINT),
            (signal.SIGTERM, signal.SIGTERM), (signal.SIGHUP, signal.SIGTERM)]:
        signal.signal(received, lambda number, _, sent=sent: stop(number, sent))
    for chunk in iter(lambda: supervisord.stdout.read1(65536), b''):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    status = supervisord.wait()
    console.say('system', 'stopped')
    return status


def systemd_units(site, processes):
    """{file name: text}: one service per process, restarted on failure
    with a growing delay, and kraya-<site>.target to start, stop and
    enable them together."""
    target = f'kraya-{site.name}.target'
    services = [f'kraya-{site.name}-{p.name}.service' for p in processes]
    path = os.pathsep.join([os.path.dirname(sys.executable),
        '/usr/local/bin', '/usr/bin', '/bin'])
    environment = '\n'.join(
        f'Environment={_systemd_quote(f"{key}={value}")}'
        for key, value in {**site.variables(), 'PATH': path}.items())
    units = {}
    for service, process in zip(services, processes):
        units[service] = f"""\
# Written by ./crm service-files from the Procfile: run it again, do not edit.
[Unit]
Description=Kraya CRM site "{site.name}": {process.name}
PartOf={target}
After=network-online.target postgresql.service
# Never give up on a crash loop: the delay grows instead (RestartSteps).
StartLimitIntervalSec=0

[Service]
User={site.path.owner()}
WorkingDirectory={sites.ROOT}
{environment}
ExecStart={' '.join(map(_systemd_quote, process.argv))}
Restart=on-failure
# 1 s after the first crash, growing to 2 minutes (systemd 254 and newer).
RestartSec=1
RestartSteps=10
RestartMaxDelaySec=120
# A stop signals every process of the unit: trytond-worker's pool too.
KillMode=control-group
TimeoutStopSec={STOP_SECONDS}

[Install]
WantedBy={target}
"""
    units[target] = f"""\
# Written by ./crm service-files: systemctl enable --now {target}
[Unit]
Description=Kraya CRM site "{site.name}"
Wants={' '.join(services)}

[Install]
WantedBy=multi-user.target
"""
    return units


def _systemd_quote(word):
    "A word of ExecStart= or Environment=, taken literally by systemd."
    word = word.replace('%', '%%').replace('$', '$$')
    if re.fullmatch(r'[\w@%+=:,./-]+', word):
        return word
    return '"' + word.replace('\\', '\\\\').replace('"', '\\"') + '"'


class Console:
    """Prints the processes' output and state changes as supervisord
    reports them: '12:04:31 worker | line', honcho's way."""

    def __init__(self, names, logs, colour=False, out=sys.stderr):
        self.width = max(map(len, [*names, 'system']))
        self.colours = {name: COLOURS[i % len(COLOURS)]
            for i, name in enumerate(names)}
        self.logs = logs
        self.colour = colour
        self.out = out
        # Output arrives in chunks; a line cut between two is kept here.
        self.partial = {}

    def say(self, name, line):
        prefix = f'{time.strftime("%H:%M:%S")} {name:<{self.width}} |'
        if self.colour:
            prefix = f'\033[{self.colours.get(name, "1")}m{prefix}\033[0m'
        self.out.write(f'{prefix} {line}\n')
        self.out.flush()

    def output(self, name, data):
        *lines, self.partial[name] = (self.partial.get(name, '') + data
            ).split('\n')
        for line in lines:
            self.say(name, line.rstrip('\r'))

    def state(self, name, state, headers):
        if state in ENDED:
            last = self.partial.pop(name, '')
            if last:
                self.say(name, last)
        pid = headers.get('pid')
        if state == 'RUNNING':
            self.say('system', f'{name} is running (pid {pid})')
        elif state == 'EXITED':
            self.say('system', f'{name} (pid {pid}) exited unexpectedly: '
                'restarting it; the other processes keep running')
        elif state == 'BACKOFF':
            tries = int(headers['tries'])
            self.say('system', f'{name} exited within {STARTSECS} s of '
                f'starting, {tries} time(s) in a row: crash loop, next try '
                f'in {tries} s (gives up after {CRASH_RETRIES})')
        elif state == 'FATAL':
            self.say('system', f'{name} GAVE UP after {CRASH_RETRIES} quick '
                'crashes; the other processes keep running. Its log: '
                f'{self.logs}/{name}.log; fix it and run ./crm start again')


class Leftovers:
    """supervisord signals a process's whole group when it stops it, but
    not when the process dies by itself: trytond-cron's and trytond-worker's
    pools would live on, holding database connections, beside the restarted
    one's. This kills what is left of a dead process's group (its id is the
    process's: supervisord starts each in a group of its own)."""

    def __init__(self, rpc):
        self.rpc = rpc
        self.pids = {}

    def state(self, name, state, headers):
        if state == 'STARTING':
            # Only RUNNING and EXITED say the pid; a quick crash needs it too.
            self.pids[name] = self.rpc.supervisor.getProcessInfo(name)['pid']
        elif state in ENDED:
            pid = int(headers.get('pid') or self.pids.get(name) or 0)
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# The states in which a process has no pid any more.
ENDED = {'EXITED', 'BACKOFF', 'STOPPED', 'FATAL'}


def _headers(line):
    return dict(item.split(':', 1) for item in line.split())


def listen(args):
    """The event listener: supervisord's events on stdin, answers on
    stdout, what the terminal shows on stderr."""
    from supervisor import childutils
    # The envelope's len counts characters of UTF-8 text, untranslated.
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding='utf-8', newline='')
    console = Console(args.names, args.logs, colour=args.colour)
    leftovers = Leftovers(childutils.getRPCInterface(os.environ))
    while True:
        headers, payload = childutils.listener.wait(stdin, sys.stdout)
        event = headers['eventname']
        if event.startswith('PROCESS_LOG'):
            first, data = payload.split('\n', 1)
            console.output(_headers(first)['processname'], data)
        elif event.startswith('PROCESS_STATE_'):
            state = event[len('PROCESS_STATE_'):]
            headers = _headers(payload)
            name = headers['processname']
            if name != LISTENER:
                leftovers.state(name, state, headers)
                console.state(name, state, headers)
        childutils.listener.ok(sys.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m kraya_site.supervise')
    commands = parser.add_subparsers(dest='command', required=True)
    listener = commands.add_parser('listen', help=listen.__doc__)
    listener.add_argument('names', nargs='+')
    listener.add_argument('--logs', required=True)
    listener.add_argument('--colour', action='store_true')
    listener.set_defaults(func=listen)
    args = parser.parse_args(argv)
    # Ctrl-C is supervisord's to handle; it stops us last.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args.func(args)


if __name__ == '__main__':
    main()
