"""The ``minitl`` command line.

Each subcommand is a function ``cmd_<name>(args)`` registered in ``build_parser``.
Errors that minitl raises on purpose print one line and exit with status 1; ``--debug``
shows the traceback instead.
"""
import argparse
import os
import platform
import sys

from . import __version__
from .errors import MinitlError


def cmd_info(args):
    import numba
    import numpy

    from .backend import gpu_status
    usable, reason = gpu_status()
    rows = [
        ("minitl", __version__),
        ("python", platform.python_version()),
        ("numpy", numpy.__version__),
        ("numba", f"{numba.__version__} ({numba.get_num_threads()} threads; "
                  f"NUMBA_DISABLE_JIT={os.environ.get('NUMBA_DISABLE_JIT', '0')})"),
        ("h5py", _version("h5py")),
        ("Pillow", _version("PIL")),
        ("backend", "numpy (CPU)" + (", cupy (GPU)" if usable else "")),
        ("gpu", ("usable: " if usable else "not usable: ") + reason),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def _version(module):
    try:
        return __import__(module).__version__
    except Exception as e:  # an optional package that is missing or broken
        return f"not available ({type(e).__name__})"


COMMANDS = {}


def command(name, help):
    """Register a subcommand: the decorated function adds its arguments to the parser it gets."""
    def register(add_arguments):
        COMMANDS[name] = (help, add_arguments)
        return add_arguments
    return register


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minitl",
        description="minitl: transfer learning with VGG16 on a from-scratch NumPy/Numba engine.")
    parser.add_argument("--version", action="version", version=f"minitl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, backend, Numba threads and whether a GPU is usable",
                       description="Print versions, the array backend, Numba threads and GPU status.")
    p.set_defaults(func=cmd_info)
    for name, (help, add_arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        add_arguments(p)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except (MinitlError, OSError, ValueError) as e:
        if args.debug:
            raise
        print(f"minitl {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"minitl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
