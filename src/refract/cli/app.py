"""The ``refract`` typer app and what every command shares: exit codes, the error guard,
one-line messages on stderr, the stdout console, the common options.

Exit codes (:mod:`refract.errors`): 0 ok; 2 a usage error (a bad value, a missing or unusable
input, an unwritable output, a failed noise floor, a failed selftest), found before work is
lost; 1 a run-time failure; 130 interrupted. Every error is one line on stderr; set
``REFRACT_DEBUG=1`` for a traceback.

Two unrelated "usage errors" meet here: click's (typer's) ``UsageError``, raised while the
command line is parsed, is imported as :class:`ClickUsageError`; refract's own
:class:`refract.errors.UsageError` is raised by the commands and mapped by :func:`guard`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from refract import __version__
from refract._cpu import CORE
from refract.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    Interrupted,
    RefractError,
)

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click.exceptions import (
        BadParameter,
        ClickException,
        NoArgsIsHelpError,
    )
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import (  # type: ignore[assignment]
        BadParameter,
        ClickException,
        NoArgsIsHelpError,
    )
    from click.exceptions import UsageError as ClickUsageError  # type: ignore[assignment]

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "NoProgressOpt",
    "OverwriteOpt",
    "app",
    "fail",
    "guard",
    "say",
    "stdout_console",
]

class OneLineErrors(TyperGroup):
    """Command-line parsing errors (bad option values, unknown options) as one line on stderr,
    exit 2. Flags show no ``<bool>`` placeholder in ``--help``."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _no_flag_metavar([*cmd.params, cmd.get_help_option(ctx)])
        return cmd

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)
        _no_flag_metavar(params)
        return params

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args=args, prog_name=prog_name, complete_var=complete_var,
                standalone_mode=False, windows_expand_args=windows_expand_args, **extra,
            )
            code = rv if isinstance(rv, int) else EXIT_OK
        except NoArgsIsHelpError as exc:
            exc.show()
            code = EXIT_USAGE
        except ClickUsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "refract"
            message = exc.format_message()
            value = _offending_value(exc, args)
            if value is not None and repr(value) not in message:
                message = f"{message.rstrip('.')}: got {value!r}."
            say(f"{where}: error: {message} (see '{where} --help')")
            code = EXIT_USAGE
        except ClickException as exc:
            say(f"refract: error: {exc.format_message()}")
            code = exc.exit_code
        except typer.Abort:
            say("refract: aborted")
            code = EXIT_RUNTIME
        if standalone_mode:
            sys.exit(code)
        return code


def _no_flag_metavar(params: Sequence[Any]) -> None:
    for param in params:
        if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


def _offending_value(exc: Exception, args: Sequence[str] | None) -> str | None:
    """The command-line text given to the option a BadParameter is about, if any."""
    param = getattr(exc, "param", None)
    opts = list(getattr(param, "opts", []) or []) + list(getattr(param, "secondary_opts", []) or [])
    if not isinstance(exc, BadParameter) or not opts:
        return None
    argv = list(sys.argv[1:] if args is None else args)
    found = None
    for i, arg in enumerate(argv):
        for opt in opts:
            if arg == opt and i + 1 < len(argv):
                found = argv[i + 1]
            elif arg.startswith(opt + "="):
                found = arg[len(opt) + 1 :]
    return found


app = typer.Typer(
    cls=OneLineErrors,
    name="refract",
    help="Does a quantized KV cache change what your LLM does? Scores a KV config against "
    "f16 on four axes (trajectory, KLD@D, R-NIAH, PLAD), in-process on llama.cpp.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"refract {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """refract: KV-cache quantization scoring, in-process on llama.cpp."""


# --------------------------------------------------------------------------- messages


def say(message: str) -> None:
    """One line on stderr (newlines inside the message are folded)."""
    line = ""
    for part in (p.strip() for p in str(message).splitlines()):
        if part:
            line += part if not line else (" " if line.endswith(":") else "; ") + part
    typer.echo(line, err=True)


def fail(message: str, code: int) -> NoReturn:
    """``refract: error: <message>`` on stderr, then exit ``code``."""
    say(f"refract: error: {message}")
    raise typer.Exit(code)


def stdout_console(width: int = 100) -> Console:
    """Stdout console; when stdout is not a terminal, wide enough for tables."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(width, 400))
    return console


# --------------------------------------------------------------------------- errors


def _is_core(exc: ImportError) -> bool:
    """Whether an ImportError is the native engine's (refused by the CPU guard or the AMX
    probe, not built, or its library not loadable)."""
    name = exc.name or ""
    return name == CORE or name.startswith(CORE + ".")


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn a command's exceptions into one stderr line and an exit code, by class.

    ========================================  ==================================================
    :class:`refract.errors.RefractError`      its ``exit_code`` (2 for a ``UsageError``, a
                                              failed floor included; 1 otherwise), its message
    ``KeyboardInterrupt``, ``Interrupted``    130, ``interrupted``
    ``ImportError`` of ``refract._core``      1, the native engine cannot be loaded
    ``MemoryError``                           1, out of memory
    ``OSError``                               1, its message
    anything else (a bug)                     1, ``internal error: …``
    ========================================  ==================================================

    With ``REFRACT_DEBUG=1`` the traceback is printed too.
    """
    try:
        yield
    except typer.Exit:
        raise
    except (KeyboardInterrupt, Interrupted):
        fail("interrupted", EXIT_INTERRUPTED)
    except RefractError as exc:
        _debug()
        fail(str(exc) or type(exc).__name__, exc.exit_code)
    except MemoryError:
        fail("out of memory", EXIT_RUNTIME)
    except ImportError as exc:
        _debug()
        if not _is_core(exc):
            _internal(exc)
        fail(f"the native engine cannot be loaded: {exc}", EXIT_RUNTIME)
    except OSError as exc:
        _debug()
        fail(str(exc) or type(exc).__name__, EXIT_RUNTIME)
    except Exception as exc:  # a bug: still one line, the traceback on request
        _debug()
        _internal(exc)


def _internal(exc: BaseException) -> NoReturn:
    fail(f"internal error: {type(exc).__name__}: {exc} (set REFRACT_DEBUG=1 for a traceback)",
         EXIT_RUNTIME)


def _debug() -> None:
    if os.environ.get("REFRACT_DEBUG"):
        traceback.print_exc()


# --------------------------------------------------------------------------- shared options

NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="No progress display.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace existing output files even when they are not "
                 "refract's own (by default only a previous refract output is replaced)."),
]
