"""Render a GGUF ``tokenizer.chat_template`` (Jinja) safely.

A chat template comes from the model file, so it is untrusted input. It is rendered the way
Hugging Face ``transformers`` and llama.cpp (minja) render it -- ``trim_blocks``,
``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception``, ``strftime_now``, an HF
style ``tojson`` and a no-op ``{% generation %}`` block -- but inside jinja2's
``ImmutableSandboxedEnvironment`` with extra limits:

* no loader: ``include`` / ``import`` / ``extends`` fail;
* access to an unsafe attribute (``__class__``, ``__globals__``, ...) fails at once instead of
  rendering as an empty string;
* template source is capped (:data:`MAX_TEMPLATE_BYTES`);
* rendering runs in a worker thread under a deadline that is checked on every executed line
  (``sys.settrace`` in that thread) and on every call, filter and arithmetic operator; a worker
  still running shortly after the deadline (stuck in a helper the checks do not reach) gets
  an exception raised inside it, so no render keeps burning CPU after its error;
* the output and every intermediate string or list are capped in size, and size-growing
  operations (``*``, ``**``, ``+``, ``%``, ``~``, int arguments to calls and filters) are
  checked before they allocate.

Like llama.cpp (minja), a template that refuses or drops system messages is detected once by a
probe render, and the system text is then folded into the first user message.
Every failure is a :class:`ChatTemplateError` naming the model.
"""

from __future__ import annotations

import ctypes
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import wraps
from types import FrameType
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from refract.errors import ChatTemplateError

__all__ = [
    "CHATML_TEMPLATE",
    "DEFAULT_TIMEOUT_S",
    "MAX_TEMPLATE_BYTES",
    "ChatTemplate",
    "ChatTemplateError",
    "build_messages",
    "render_chat",
]

#: Largest accepted template source, in UTF-8 bytes.
MAX_TEMPLATE_BYTES = 256 * 1024
#: Default wall-clock budget for compiling or rendering one template.
DEFAULT_TIMEOUT_S = 10.0
#: Largest integer accepted as an argument of a call or filter (widths, counts, ...).
_MAX_INT_ARG = 1 << 20
#: Largest exponent result (in bits) for ``**`` on integers.
_MAX_POW_BITS = 1 << 16
#: Output / intermediate size cap: this many times the input size, plus a floor.
_SIZE_FACTOR = 8
_SIZE_FLOOR = 1 << 20
#: Grace beyond the deadline before the worker thread is stopped from outside.
_JOIN_GRACE_S = 2.0
#: Name of the thread a template renders in.
WORKER_THREAD_NAME = "refract-chat-template"

#: ChatML, used when a model has no chat template (same text as llama.cpp's fallback).
CHATML_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)


class _RenderAborted(BaseException):
    """Raised inside the worker to stop a render; a BaseException so that no ``except
    Exception`` in jinja's runtime can swallow it."""


class _GenerationExtension(Extension):
    """``{% generation %}...{% endgeneration %}`` (HF's assistant-mask marker): render the body."""

    tags = {"generation"}  # noqa: RUF012 - jinja's Extension declares it this way

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render_body")
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


class _Limits(threading.local):
    deadline: float = float("inf")
    max_size: int = _SIZE_FLOOR


def _size_of(value: Any) -> int:
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        return len(value)
    return 0


class _SafeEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox plus deadline and size checks; the limits are per rendering thread."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            extensions=[loopcontrols, _GenerationExtension],
            autoescape=False,
            cache_size=0,
        )
        self.limits = _Limits()
        self.globals.pop("lipsum", None)
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now
        self.filters["tojson"] = _tojson
        for name, func in list(self.filters.items()):
            self.filters[name] = self._guard(func)

    # -- limits --------------------------------------------------------------------------
    def check_deadline(self) -> None:
        if time.monotonic() > self.limits.deadline:
            raise _RenderAborted("time limit exceeded")

    def check_size(self, value: Any) -> Any:
        if _size_of(value) > self.limits.max_size:
            raise _RenderAborted(
                f"a value of {_size_of(value)} items exceeds the limit of {self.limits.max_size}"
            )
        return value

    def check_args(self, args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT_ARG:
                raise _RenderAborted(f"integer argument {value} is too large")

    def _guard(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # Skip the value being filtered (and the context/environment jinja passes first).
        skip = 1 if getattr(func, "jinja_pass_arg", None) is None else 2

        @wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.check_deadline()
            self.check_args(args[skip:], kwargs)
            return self.check_size(func(*args, **kwargs))

        return guarded

    # -- sandbox hooks -------------------------------------------------------------------
    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.check_deadline()
        self.check_args(args, kwargs)
        return self.check_size(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.check_deadline()
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(count, int) and _size_of(seq) * max(count, 0) > self.limits.max_size:
                    raise _RenderAborted("repetition result is too large")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * max(abs(left).bit_length(), 1) > _MAX_POW_BITS:
                raise _RenderAborted("power result is too large")
        elif operator == "+" and _size_of(left) + _size_of(right) > self.limits.max_size:
            raise _RenderAborted("concatenation result is too large")
        return self.check_size(super().call_binop(context, operator, left, right))


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def build_messages(user: str, system: str | None = None) -> list[dict[str, str]]:
    """``[system, user]`` (or ``[user]`` when ``system`` is None) as chat message dicts."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": user})
    return messages


def _run_limited(
    env: _SafeEnvironment, work: Callable[[], str], timeout_s: float, max_size: int
) -> str:
    """Run ``work`` in a worker thread under the deadline and size limits of ``env``."""
    outcome: dict[str, Any] = {}

    def line_tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > env.limits.deadline:
            raise _RenderAborted("time limit exceeded")
        return line_tracer

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        # Called for every new frame; only the template's own code is traced line by line.
        if time.monotonic() > env.limits.deadline:
            raise _RenderAborted("time limit exceeded")
        return line_tracer if frame.f_code.co_filename == "<template>" else None

    def worker() -> None:
        env.limits.deadline = time.monotonic() + timeout_s
        env.limits.max_size = max_size
        sys.settrace(tracer)
        try:
            outcome["text"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = exc
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=worker, name=WORKER_THREAD_NAME, daemon=True)
    thread.start()
    thread.join(timeout_s + _JOIN_GRACE_S)
    if thread.is_alive():
        # Stuck where the deadline checks do not reach (a long loop inside a Python-level
        # helper, a slow builtin): raise in the worker itself so that it stops instead of
        # burning CPU for the rest of the process. The exception fires at its next bytecode.
        _raise_in_thread(thread, _RenderAborted)
        thread.join(_JOIN_GRACE_S)
        raise _RenderAborted("time limit exceeded (the template is stuck in a builtin)")
    if "error" in outcome:
        raise outcome["error"]
    return str(outcome["text"])


def _raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Asynchronously raise ``exc_type`` in ``thread`` (CPython's PyThreadState_SetAsyncExc)."""
    if thread.ident is None:
        return
    set_async = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async.argtypes = (ctypes.c_ulong, ctypes.py_object)
    set_async.restype = ctypes.c_int
    if set_async(thread.ident, exc_type) > 1:  # more than one thread: undo (cannot happen)
        set_async(thread.ident, None)


def _describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, _RenderAborted):
        reason = str(exc)
        if reason.startswith("time limit"):
            return f"{reason} ({timeout_s:g} s); the template loops too long"
        return f"resource limit: {reason}"
    if isinstance(exc, SecurityError):
        return f"refused by the sandbox: {exc}"
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error at line {exc.lineno}: {exc.message}"
    if isinstance(exc, TypeError) and "no loader" in str(exc):
        return "include, import and extends are not allowed in a chat template"
    if isinstance(exc, RecursionError):
        return "recursion too deep"
    if isinstance(exc, TemplateError):
        return f"{type(exc).__name__}: {exc.message or exc}"
    return f"{type(exc).__name__}: {exc}"


class ChatTemplate:
    """A compiled chat template of one model.

    ``source`` None or blank selects :data:`CHATML_TEMPLATE` (``used_fallback`` is then True).
    With ``fallback_on_syntax_error`` a template that does not parse also falls back to ChatML
    (what llama.cpp does); a template that parses but fails or is refused at render time always
    raises :class:`ChatTemplateError`.
    """

    def __init__(
        self,
        source: str | None,
        *,
        model_name: str,
        bos_token: str = "",
        eos_token: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        fallback_on_syntax_error: bool = False,
    ) -> None:
        self.model_name = model_name
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.timeout_s = float(timeout_s)
        self.used_fallback = source is None or not source.strip()
        self.fallback_reason: str | None = "no chat template" if self.used_fallback else None
        self.source = CHATML_TEMPLATE if self.used_fallback else str(source)
        size = len(self.source.encode("utf-8", "surrogatepass"))
        if size > MAX_TEMPLATE_BYTES:
            raise self._error(f"template is {size} bytes, over the {MAX_TEMPLATE_BYTES} limit")
        self._env = _SafeEnvironment()
        try:
            self._template = self._compile(self.source)
        except ChatTemplateError as err:
            cause = err.__cause__
            if not (fallback_on_syntax_error and isinstance(cause, TemplateSyntaxError)):
                raise
            self.used_fallback = True
            self.fallback_reason = str(err)
            self.source = CHATML_TEMPLATE
            self._template = self._compile(self.source)
        self.supports_system_role = self._probe_system_role()

    def _probe_system_role(self) -> bool:
        """Whether a system message survives rendering (minja's probe, as llama.cpp does)."""
        needle = "<System Needle>"
        probe = [{"role": "system", "content": needle}, {"role": "user", "content": "Hey"}]
        try:
            text = self._render_raw(probe, add_generation_prompt=False, enable_thinking=False)
        except ChatTemplateError as err:
            if isinstance(err.__cause__, (_RenderAborted, SecurityError)):
                raise  # a hostile template, not a missing feature
            return False
        return needle in text

    def _error(self, what: str) -> ChatTemplateError:
        return ChatTemplateError(f"chat template of model {self.model_name}: {what}")

    def _compile(self, source: str) -> Any:
        holder: dict[str, Any] = {}

        def work() -> str:
            holder["template"] = self._env.from_string(source)
            return ""

        try:
            _run_limited(self._env, work, self.timeout_s, _SIZE_FLOOR + 16 * len(source))
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise self._error(_describe(exc, self.timeout_s)) from exc
        template = holder["template"]
        self._install_join_guard(template)
        return template

    def _install_join_guard(self, template: Any) -> None:
        """Bound jinja's ``~`` operator, which compiles to a direct call of ``str_join``."""
        namespace = template.root_render_func.__globals__
        env = self._env
        for name in ("str_join", "markup_join"):
            original = namespace.get(name)
            if callable(original):
                namespace[name] = _guarded_join(env, original)

    def render(
        self,
        user: str,
        system: str | None = None,
        *,
        add_generation_prompt: bool = True,
        enable_thinking: bool = False,
        strip_bos: bool = False,
        strip_eos: bool = False,
        extra_context: Mapping[str, Any] | None = None,
    ) -> str:
        """Render ``[system, user]`` (or ``[user]``) with the generation prompt.

        ``strip_bos`` / ``strip_eos`` remove a leading ``bos_token`` / trailing ``eos_token``
        string from the result, as llama.cpp does when the tokenizer adds them itself: pass
        ``strip_bos=True`` when you will tokenize with the vocabulary's automatic BOS.
        """
        return self.render_messages(
            build_messages(user, system),
            add_generation_prompt=add_generation_prompt,
            enable_thinking=enable_thinking,
            strip_bos=strip_bos,
            strip_eos=strip_eos,
            extra_context=extra_context,
        )

    def render_messages(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        add_generation_prompt: bool = True,
        enable_thinking: bool = False,
        strip_bos: bool = False,
        strip_eos: bool = False,
        extra_context: Mapping[str, Any] | None = None,
    ) -> str:
        """Render arbitrary ``messages`` (dicts with ``role`` and ``content``).

        When the template drops or refuses system messages (``supports_system_role`` False)
        they are folded into the next user message, joined with a newline, as llama.cpp's
        minja polyfill does.
        """
        msgs = [dict(m) for m in messages]
        if not self.supports_system_role:
            msgs = _fold_system_messages(msgs)
        text = self._render_raw(msgs, add_generation_prompt, enable_thinking, extra_context)
        if strip_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        if strip_eos and self.eos_token and text.endswith(self.eos_token):
            text = text[: -len(self.eos_token)]
        return text

    def _render_raw(
        self,
        msgs: list[dict[str, str]],
        add_generation_prompt: bool,
        enable_thinking: bool,
        extra_context: Mapping[str, Any] | None = None,
    ) -> str:
        context: dict[str, Any] = {
            "messages": msgs,
            "add_generation_prompt": add_generation_prompt,
            "enable_thinking": enable_thinking,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        if extra_context:
            context.update(extra_context)
        input_size = sum(len(str(m.get("content", ""))) for m in msgs) + len(self.source)
        max_size = _SIZE_FACTOR * input_size + _SIZE_FLOOR
        template = self._template
        env = self._env

        def work() -> str:
            chunks: list[str] = []
            total = 0
            for chunk in template.generate(context):
                total += len(chunk)
                if total > max_size:
                    raise _RenderAborted(f"output exceeds {max_size} characters")
                env.check_deadline()
                chunks.append(chunk)
            return "".join(chunks)

        try:
            return _run_limited(env, work, self.timeout_s, max_size)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise self._error(_describe(exc, self.timeout_s)) from exc


def _fold_system_messages(msgs: list[dict[str, str]]) -> list[dict[str, str]]:
    """Move system content into the following user message (or a user message of its own)."""
    out: list[dict[str, str]] = []
    pending = ""
    for m in msgs:
        role, content = m.get("role"), str(m.get("content", ""))
        if role == "system":
            pending = f"{pending}\n{content}" if pending else content
            continue
        if pending:
            if role == "user":
                m = {**m, "content": pending + ("\n" + content if content else "")}
            else:
                out.append({"role": "user", "content": pending})
            pending = ""
        out.append(m)
    if pending:
        out.append({"role": "user", "content": pending})
    return out


def _guarded_join(env: _SafeEnvironment, original: Callable[[Any], str]) -> Callable[[Any], str]:
    def guarded(seq: Any) -> str:
        env.check_deadline()
        items = list(seq)
        if sum(len(x) if isinstance(x, str) else 0 for x in items) > env.limits.max_size:
            raise _RenderAborted("concatenation result is too large")
        return env.check_size(original(items))  # type: ignore[no-any-return]

    return guarded


def render_chat(
    template: str | None,
    user: str,
    system: str | None = None,
    *,
    model_name: str,
    bos_token: str = "",
    eos_token: str = "",
    enable_thinking: bool = False,
    add_generation_prompt: bool = True,
    strip_bos: bool = False,
    strip_eos: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    fallback_on_syntax_error: bool = False,
) -> tuple[str, bool]:
    """One-shot render; returns ``(rendered_text, used_fallback)``.

    For many prompts build one :class:`ChatTemplate` and call :meth:`ChatTemplate.render`
    (the template is compiled once).
    """
    tmpl = ChatTemplate(
        template,
        model_name=model_name,
        bos_token=bos_token,
        eos_token=eos_token,
        timeout_s=timeout_s,
        fallback_on_syntax_error=fallback_on_syntax_error,
    )
    text = tmpl.render(
        user,
        system,
        add_generation_prompt=add_generation_prompt,
        enable_thinking=enable_thinking,
        strip_bos=strip_bos,
        strip_eos=strip_eos,
    )
    return text, tmpl.used_fallback
