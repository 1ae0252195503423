"""An automation rule's Python action: a short snippet an administrator
writes, run with RestrictedPython in a child process of its own.

Two walls, both kept libraries rather than a home-made sandbox:
- RestrictedPython compiles the snippet: no imports, no names or
  attributes starting with "_" (so no __subclasses__, __globals__), only
  its safe builtins (no open, no eval), guarded item and attribute access.
- The child process runs it with an address-space and a CPU-time limit
  (resource.setrlimit) and is killed after a wall-clock timeout, so an
  endless loop or an unbounded allocation ends the child, never the CRM.

The snippet sees one record at a time through a small API:
    record          its fields, as a read-only dict of plain values
    set(name, v)    write a field of the record (as the rule's set field)
    log(text)       a line in the run's log
    enqueue(name)   enrol the record's lead in the sequence of that name
and the child answers in JSON what to do; the CRM does it."""
import json
import os
import resource
import subprocess
import sys
from decimal import Decimal

from RestrictedPython import compile_restricted

TIMEOUT = 5  # seconds of wall clock for one action on its records
CPU_SECONDS = 3
MEMORY_BYTES = 256 * 1024 * 1024
OUTPUT_BYTES = 1024 * 1024
CHILD = os.path.join(os.path.dirname(__file__), 'python_action_child.py')


class SnippetError(Exception):
    "The snippet could not be compiled or did not finish: says why."


def check(code):
    "Compile the snippet; SnippetError with the reasons if it cannot be."
    try:
        compile_restricted(code or '', '<python action>', 'exec')
    except SyntaxError as error:
        reasons = error.args[0] if error.args else str(error)
        if isinstance(reasons, (list, tuple)):
            reasons = "; ".join(reasons)
        raise SnippetError(str(reasons)) from error


def _plain(value):
    "Money as a number the snippet can compare; dates as ISO text."
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _limit():
    "In the child, before it runs Python: its memory and CPU time."
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def run(code, records):
    """Run the snippet on each record (a list of {field: value}) in a
    limited child; [{'set': {...}, 'log': [...], 'enqueue': [...]}] in
    the records' order, or SnippetError."""
    check(code)
    payload = json.dumps({'code': code, 'records': records}, default=_plain)
    try:
        # -I and an empty environment: the child sees neither the site's
        # settings nor its secrets.
        child = subprocess.run([sys.executable, '-I', CHILD],
            input=payload.encode(), capture_output=True, timeout=TIMEOUT,
            preexec_fn=_limit, env={})
    except subprocess.TimeoutExpired as error:
        raise SnippetError(
            f"stopped: it ran longer than {TIMEOUT} seconds") from error
    if child.returncode != 0:
        raise SnippetError(_failure(child))
    try:
        answer = json.loads(child.stdout[:OUTPUT_BYTES])
    except ValueError as error:
        raise SnippetError("it gave no answer") from error
    if 'error' in answer:
        raise SnippetError(answer['error'])
    return answer['results']


def _failure(child):
    "Why a child died, in words."
    if child.returncode == -9 or child.returncode == -24:  # SIGKILL, SIGXCPU
        return f"stopped: it used more than {CPU_SECONDS} seconds of CPU"
    text = child.stderr.decode(errors='replace')
    if 'MemoryError' in text:
        return f"stopped: it used more than {MEMORY_BYTES >> 20} MB"
    return "it failed: " + (text.strip().splitlines() or ["no output"])[-1]
