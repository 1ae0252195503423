"""./crm bench [NAME]: run the benchmarks in bench/ (bench/bench_NAME.py,
or all of them), each in its own process; ./crm chaos: the fault-injection
run (bench/chaos.py)."""
import os
import subprocess
import sys

from . import sites
from .sites import SiteError


def cmd_bench(args):
    "Run the benchmarks in bench/ (all, or bench/bench_NAME.py)."
    folder = sites.ROOT / 'bench'
    scripts = sorted(folder.glob('bench_*.py'))
    if args.name:
        scripts = [s for s in scripts
            if s.stem in {args.name, f'bench_{args.name}'}]
        if not scripts:
            names = ', '.join(s.stem[len('bench_'):]
                for s in sorted(folder.glob('bench_*.py')))
            raise SiteError(f'no benchmark "{args.name}" (there is: {names})')
    env = dict(os.environ, KRAYA_ROOT=str(sites.ROOT))
    for script in scripts:
        print(f'== {script.relative_to(sites.ROOT)}', flush=True)
        result = subprocess.run(
            [sys.executable, str(script), *args.bench_args], env=env,
            cwd=sites.ROOT)
        if result.returncode:
            raise SiteError(f'{script.name} failed (exit {result.returncode})')


def cmd_chaos(args):
    """Kill processes and restart the database under mixed traffic on the
    production shape, then check nothing was lost (bench/chaos.py)."""
    result = subprocess.run([sys.executable,
            str(sites.ROOT / 'bench' / 'chaos.py'), *args.chaos_args],
        env=dict(os.environ, KRAYA_ROOT=str(sites.ROOT)), cwd=sites.ROOT)
    if result.returncode:
        raise SiteError('the fault-injection run lost or doubled something '
            '(see above)' if result.returncode == 1
            else f'chaos.py failed (exit {result.returncode})')
