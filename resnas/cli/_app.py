"""The typer application and the error boundary of the CLI."""

from __future__ import annotations

import atexit
import os
import sys
import threading

import typer
from rich.console import Console

from resnas._redact import redact
from resnas._workers import stop_worker_server
from resnas.errors import ResnasError

app = typer.Typer(
    name="resnas",
    help="Search where, how many and which residual connections a network needs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Tables stay readable when output goes to a file or a pipe (rich would assume 80 columns).
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


def debug() -> bool:
    return os.environ.get("RESNAS_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Entry point: known errors become one line on stderr and exit code 2."""
    try:
        result = app(args=argv, prog_name="resnas", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted", highlight=False)
        return 130
    except typer.TyperException as exc:  # usage errors: click's one-line message, exit 2
        if type(exc).__name__ == "Abort":  # click turns KeyboardInterrupt into its own Abort
            err_console.print("interrupted", highlight=False)
            return 130
        message = getattr(exc, "format_message", None)
        if message is None:
            raise
        # One line, as every other error: click's usage block would bury it.
        print(f"error: {redact(' '.join(message().split()))}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except ResnasError as exc:
        if debug():
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: one line, the traceback only on request
        if debug():
            raise
        message = redact(f"unexpected {type(exc).__name__}: {exc}")
        print(f"error: {message} (set RESNAS_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console entry point. An interrupted search (exit 130) leaves at once: everything is
    recorded by then, and tearing down torch and the storage can take seconds on a loaded machine.
    Any other exit does what Python's own exit does that anyone can notice (waits for running
    threads, closes the storages, runs the exit handlers: Ray's shutdown, trackers, temporary
    files, multiprocessing's clean-up, logging; flushes the output) and then skips the teardown
    of every imported module, which costs a second or more once torch is imported."""
    code = main()
    if code != 130:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        storage = sys.modules.get("resnas.search._storage")
        if storage is not None:
            storage.close_storages()
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head): nothing more can be said there
            pass
    stop_worker_server()  # --jobs: not left to hold the output open through its own exit
    os._exit(code)
