"""Chat-template rendering: real template shapes, the ChatML fallback, hostile templates."""

from __future__ import annotations

import sys
import time

import pytest

from refract.inputs.chat import (
    CHATML_TEMPLATE,
    MAX_TEMPLATE_BYTES,
    ChatTemplate,
    ChatTemplateError,
    render_chat,
)

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma 3's structure: BOS, the system message folded into the first user turn, 'model' role.
GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# Qwen3-style: namespace, enable_thinking switch.
QWEN3_LIKE = """{%- set ns = namespace(first=true) -%}
{%- for message in messages -%}
{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}
{%- set ns.first = false -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- if enable_thinking is defined and enable_thinking is false -%}
{{- '<think>\n\n</think>\n\n' -}}
{%- endif -%}
{%- endif -%}"""

# Llama-3.1-style date handling.
LLAMA31_LIKE = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\nToday Date: " + date_string + "<|eot_id|>" }}
{%- for message in messages %}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}"""  # noqa: E501


def test_smollm2_system_and_user() -> None:
    text, fallback = render_chat(SMOLLM2, "Hi there", "Be brief.", model_name="smollm2")
    assert not fallback
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_smollm2_user_only_gets_default_system() -> None:
    text, _ = render_chat(SMOLLM2, "Hi", model_name="smollm2")
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_gemma3_folds_system_into_first_user_turn() -> None:
    tmpl = ChatTemplate(GEMMA3, model_name="gemma3", bos_token="<bos>", eos_token="<eos>")
    assert tmpl.render("  What?  ", "Context here.") == (
        "<bos><start_of_turn>user\nContext here.\n\nWhat?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert tmpl.render("What?") == "<bos><start_of_turn>user\nWhat?<end_of_turn>\n" + (
        "<start_of_turn>model\n"
    )
    # llama.cpp strips the template's BOS when the tokenizer adds its own.
    assert tmpl.render("What?", strip_bos=True).startswith("<start_of_turn>user\n")
    assert not tmpl.used_fallback


def test_gemma3_long_system_message() -> None:
    tmpl = ChatTemplate(GEMMA3, model_name="gemma3", bos_token="<bos>")
    system = "Sentence number one. " * 30_000  # ~630 kB, an R-NIAH haystack
    text = tmpl.render("Q: which?\nA:", system)
    assert text.startswith("<bos><start_of_turn>user\n" + system + "\n\nQ: which?\nA:")


GEMMA2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + "
    "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{'<start_of_turn>model\n'}}{% endif %}"
)


def test_system_role_polyfill_for_templates_that_refuse_it() -> None:
    tmpl = ChatTemplate(GEMMA2, model_name="gemma2", bos_token="<bos>")
    assert not tmpl.supports_system_role
    assert tmpl.render("Question?", "Haystack.") == (
        "<bos><start_of_turn>user\nHaystack.\nQuestion?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert tmpl.render("Question?") == (
        "<bos><start_of_turn>user\nQuestion?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_system_role_polyfill_for_templates_that_drop_it() -> None:
    users_only = (
        "{% for m in messages %}{% if m.role == 'user' %}[U]{{ m.content }}{% endif %}{% endfor %}"
    )
    tmpl = ChatTemplate(users_only, model_name="m")
    assert not tmpl.supports_system_role
    assert tmpl.render("q", "ctx") == "[U]ctx\nq"
    assert ChatTemplate(SMOLLM2, model_name="m").supports_system_role
    assert ChatTemplate(GEMMA3, model_name="m").supports_system_role


def test_generation_prompt_can_be_disabled() -> None:
    text, _ = render_chat(SMOLLM2, "Hi", "S", model_name="m", add_generation_prompt=False)
    assert not text.endswith("<|im_start|>assistant\n")


def test_enable_thinking_false_is_passed() -> None:
    text, _ = render_chat(QWEN3_LIKE, "Hi", model_name="qwen3")
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    on, _ = render_chat(QWEN3_LIKE, "Hi", model_name="qwen3", enable_thinking=True)
    assert on.endswith("<|im_start|>assistant\n")


def test_strftime_now_and_trim_filter() -> None:
    text, _ = render_chat(LLAMA31_LIKE, " Hi ", "Sys", model_name="llama", bos_token="<|bot|>")
    today = time.strftime("%d %b %Y")
    assert text.startswith("<|bot|><|start_header_id|>system<|end_header_id|>\n\nToday Date: ")
    assert today in text or time.strftime("%d %b %Y") in text
    assert "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_hf_style_tojson_generation_block_and_loopcontrols() -> None:
    src = (
        "{{ messages[0].content | tojson }}|{% generation %}G{% endgeneration %}|"
        "{% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}"
    )
    text, _ = render_chat(src, "héllo <b>", model_name="m")
    assert text == '"héllo <b>"|G|01'


def test_fallback_when_no_template() -> None:
    for missing in (None, "", "   \n"):
        text, fallback = render_chat(missing, "Hi", "Sys", model_name="m")
        assert fallback
        assert text == (
            "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
    assert ChatTemplate(None, model_name="m").source == CHATML_TEMPLATE


def test_syntax_error_raises_or_falls_back() -> None:
    with pytest.raises(ChatTemplateError, match=r"model broken-model: syntax error"):
        render_chat("{% if %}", "Hi", model_name="broken-model")
    tmpl = ChatTemplate("{% if %}", model_name="m", fallback_on_syntax_error=True)
    assert tmpl.used_fallback and tmpl.fallback_reason
    assert tmpl.render("Hi").startswith("<|im_start|>user\nHi")


def test_raise_exception_is_reported() -> None:
    with pytest.raises(ChatTemplateError, match="model m: .*roles must alternate"):
        render_chat(GEMMA3.replace("(loop.index0 % 2 == 0)", "false"), "x", "s", model_name="m")


def test_template_size_limit() -> None:
    big = "x" * (MAX_TEMPLATE_BYTES + 1)
    with pytest.raises(ChatTemplateError, match="model big: template is .* bytes"):
        ChatTemplate(big, model_name="big")
    assert ChatTemplate("x" * (MAX_TEMPLATE_BYTES - 10), model_name="ok").render("u")


HOSTILE = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__['sys'] }}",
    "{% set ns = namespace() %}{{ ns.__class__.__init__.__globals__ }}",
    "{{ cycler('a').next.__self__.__class__ }}",
    "{{ self.__dict__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ '{0.__class__}'.format('') }}",
    "{{ raise_exception.__globals__ }}",
    "{{ messages.pop() }}",
    "{{ messages[0].update({'role': 'x'}) }}",
    "{% include '/etc/passwd' %}",
    "{% import '/etc/passwd' as p %}",
    "{% extends '/etc/passwd' %}",
    "{{ lipsum(10) }}",
    "{{ 'x' * 10**10 }}",
    "{{ 'x'.center(10**9) }}",
    "{{ 'x' | center(10**9) }}",
    "{{ 2 ** 1000000000 }}",
    "{{ '%s' % ('x' * 10**9) }}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_templates_fail_safely(source: str) -> None:
    start = time.monotonic()
    with pytest.raises(ChatTemplateError, match="chat template of model evil-model: "):
        render_chat(source, "Hi", "Sys", model_name="evil-model", timeout_s=2.0)
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% if j == -1 %}x{% endif %}{% endfor %}{% endfor %}",
    ],
)
def test_huge_loop_times_out(source: str) -> None:
    before = sys.gettrace()
    start = time.monotonic()
    with pytest.raises(ChatTemplateError, match=r"model loopy: time limit exceeded \(0.5 s\)"):
        render_chat(source, "Hi", model_name="loopy", timeout_s=0.5)
    assert time.monotonic() - start < 3.0
    assert sys.gettrace() is before  # the tracer lives only in the worker thread


def test_string_doubling_is_bounded() -> None:
    for op in ("~", "+"):
        source = (
            "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(26) %}"
            f"{{% set ns.s = ns.s {op} ns.s %}}{{% endfor %}}{{{{ ns.s | length }}}}"
        )
        start = time.monotonic()
        with pytest.raises(ChatTemplateError, match="model dbl: resource limit"):
            render_chat(source, "Hi", model_name="dbl", timeout_s=5.0)
        assert time.monotonic() - start < 3.0


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ 'x' * 10**8 }}", "repetition result is too large"),
        ("{{ 'x'.center(10**7) }}", "integer argument 10000000 is too large"),
        ("{{ 'x' | indent(10**7) }}", "integer argument 10000000 is too large"),
        ("{{ 2 ** 1000000 }}", "power result is too large"),
    ],
)
def test_size_growing_operations_are_checked_first(source: str, reason: str) -> None:
    with pytest.raises(ChatTemplateError, match=f"model m: resource limit: {reason}"):
        render_chat(source, "Hi", model_name="m")


def test_output_size_is_bounded() -> None:
    source = "{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}"
    with pytest.raises(ChatTemplateError, match="model big-out: resource limit: output"):
        render_chat(source, "y" * 1000, model_name="big-out", timeout_s=5.0)


def test_template_is_reusable_after_a_failure() -> None:
    tmpl = ChatTemplate(
        "{% if messages[0].content == 'boom' %}{{ raise_exception('boom') }}{% endif %}ok",
        model_name="m",
    )
    with pytest.raises(ChatTemplateError):
        tmpl.render("boom")
    assert tmpl.render("fine") == "ok"
