"""Every error refract raises on purpose, in one hierarchy (the CLI maps classes to exit codes).

.. code-block:: text

    RefractError                      exit 1 unless a subclass says otherwise
    ├── UsageError (ValueError)       exit 2: a bad flag, value or combination
    │   ├── InputError                exit 2: an input file that cannot be used
    │   │   ├── ModelError            the model file (not GGUF, unreadable, refused by llama.cpp)
    │   │   ├── ChatTemplateError     the model's chat template cannot render a prompt
    │   │   ├── PromptSetError        a prompt-set JSONL file
    │   │   └── ReportError           a report JSON file (compare, leaderboard)
    │   ├── KVConfigError             a KV config string
    │   ├── MemoryBudgetError         a plan whose contexts would not fit in memory
    │   ├── IncomparableReports       reports of different inputs or settings side by side
    │   ├── DemoUnavailable           ``--model demo`` without the demo extra
    │   └── FloorFailed               the ref-vs-ref noise floor is not clean
    ├── EngineError (RuntimeError)    exit 1: llama.cpp failed at run time
    │   └── NonFiniteLogits           NaN/inf logits (a candidate's: that axis is invalid)
    ├── ReferenceInvalid              exit 1: the reference's logits are not finite
    ├── CorpusError (RuntimeError)    exit 1: a corpus download or cache failed
    └── Interrupted                   exit 130

The builtin bases (``ValueError`` for usage, ``RuntimeError`` for run time) stay so that code
catching those keeps working; refract itself tells errors apart by class, never by message.
The native engine raises :class:`UsageError` and :class:`EngineError` (its C++ ``UsageError``
and ``EngineError`` are translated onto these classes).
"""

from __future__ import annotations

from typing import Any, ClassVar

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class RefractError(Exception):
    """Base of every error refract raises on purpose; its message is one line."""

    exit_code: ClassVar[int] = EXIT_RUNTIME


class UsageError(RefractError, ValueError):
    """A user mistake: a bad flag, value or combination, found before work is lost."""

    exit_code: ClassVar[int] = EXIT_USAGE


class InputError(UsageError):
    """An input file that cannot be used as given."""


class ModelError(InputError):
    """The model file is missing, not a GGUF file, or refused by llama.cpp."""


class ChatTemplateError(InputError):
    """The model's chat template cannot render a prompt (or is missing where one is needed)."""


class PromptSetError(InputError):
    """A prompt-set file is malformed (the message names the file and line)."""


class ReportError(InputError):
    """A report file cannot be read as a refract or refract-llm report."""


class KVConfigError(UsageError):
    """A KV config string that does not parse."""


class MemoryBudgetError(UsageError):
    """The contexts a plan needs would not fit in the memory available (raised before
    anything is allocated)."""

    def __init__(self, message: str, *, needed: int, available: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available


class IncomparableReports(UsageError):
    """Reports measured on different inputs or settings were set side by side."""


class DemoUnavailable(UsageError):
    """``--model demo`` without the demo model (the ``demo`` extra) installed."""


class FloorFailed(UsageError):
    """The ref-vs-ref noise floor is not clean: scores from this build cannot be trusted.

    ``reports`` are the (marked) reports to write anyway, one per candidate.
    """

    def __init__(self, check: Any, detail: dict[str, Any],
                 reports: list[dict[str, Any]] | None = None) -> None:
        super().__init__(check.message)
        self.check = check
        self.detail = detail
        self.reports = reports or []


class EngineError(RefractError, RuntimeError):
    """llama.cpp failed at run time (a decode, a context that could not be created, …)."""


class NonFiniteLogits(EngineError):
    """A model run produced NaN/inf logits: whatever it would measure is meaningless."""

    def __init__(self, label: str, n_rows: int, n_total: int, where: str) -> None:
        super().__init__(
            f"KV config {label} produced non-finite (NaN/inf) logits in {n_rows} of {n_total} "
            f"rows ({where})"
        )
        self.label = label
        self.n_rows = n_rows
        self.n_total = n_total
        self.where = where


class ReferenceInvalid(RefractError):
    """The reference produced non-finite logits: nothing can be measured against it."""


class CorpusError(RefractError, RuntimeError):
    """A corpus could not be downloaded, verified or read."""


class Interrupted(RefractError):
    """The run was interrupted (Ctrl-C); what was finished is kept."""

    exit_code: ClassVar[int] = EXIT_INTERRUPTED


__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "ChatTemplateError",
    "CorpusError",
    "DemoUnavailable",
    "EngineError",
    "FloorFailed",
    "IncomparableReports",
    "InputError",
    "Interrupted",
    "KVConfigError",
    "MemoryBudgetError",
    "ModelError",
    "NonFiniteLogits",
    "PromptSetError",
    "ReferenceInvalid",
    "ReportError",
    "RefractError",
    "UsageError",
]
