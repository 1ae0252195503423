"""The child process of a Python action (python_action.py): reads the
snippet and the records as JSON on stdin, runs the snippet on each record
with RestrictedPython, and writes what it asked for as JSON on stdout.
Imports nothing of the CRM or of Tryton: the snippet's world is this
file's few names."""
import json
import sys

from RestrictedPython import compile_restricted, safe_globals
from RestrictedPython.Eval import default_guarded_getitem
from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence, guarded_unpack_sequence, safer_getattr)

MAX_LOG_LINES = 100


def guarded_write(target):
    "Only the snippet's own lists and dicts may be written to."
    if isinstance(target, (list, dict)):
        return target
    raise TypeError("only lists and dicts may be changed")


def run_one(code, record):
    asked = {'set': {}, 'log': [], 'enqueue': []}

    def set_(name, value):
        if not isinstance(name, str):
            raise TypeError("set() takes a field name")
        asked['set'][name] = value

    def log(*values):
        if len(asked['log']) < MAX_LOG_LINES:
            asked['log'].append(" ".join(str(v) for v in values)[:500])

    def enqueue(sequence_name):
        asked['enqueue'].append(str(sequence_name))

    env = dict(safe_globals)
    env.update({
            '_getattr_': safer_getattr,
            '_getitem_': default_guarded_getitem,
            '_getiter_': iter,
            '_iter_unpack_sequence_': guarded_iter_unpack_sequence,
            '_unpack_sequence_': guarded_unpack_sequence,
            '_write_': guarded_write,
            '_print_': None,
            'record': dict(record),
            'set': set_,
            'log': log,
            'enqueue': enqueue,
            'len': len, 'min': min, 'max': max, 'sum': sum, 'any': any,
            'all': all, 'sorted': sorted, 'round': round, 'str': str,
            'int': int, 'float': float,
            })
    exec(compile_restricted(code, '<python action>', 'exec'), env)
    return asked


def main():
    given = json.loads(sys.stdin.read())
    try:
        results = [run_one(given['code'], r) for r in given['records']]
    except MemoryError:
        raise
    except Exception as error:
        json.dump({'error': f"{type(error).__name__}: {error}"}, sys.stdout)
        return
    json.dump({'results': results}, sys.stdout, default=str)


if __name__ == '__main__':
    main()
