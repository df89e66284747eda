"""KV-cache configuration strings (SPEC §2).

``"ctk=q8_0, ctv=q4_0"`` → ``KVConfig(ctk="q8_0", ctv="q4_0")``. Type names are kept as
strings here; the engine resolves them by name against the linked ggml, never by number.
"""

from __future__ import annotations

from dataclasses import dataclass

from refract.errors import KVConfigError

_ROT_KEYS = ("attn_rot_k", "attn_rot_v", "attn_rot_disable")
_ROT_ENV = {
    "attn_rot_k": "LLAMA_ATTN_ROT_K_OVERRIDE",
    "attn_rot_v": "LLAMA_ATTN_ROT_V_OVERRIDE",
    "attn_rot_disable": "LLAMA_ATTN_ROT_DISABLE",
}


@dataclass(frozen=True)
class KVConfig:
    ctk: str = "f16"
    ctv: str = "f16"
    attn_rot_k: int | None = None
    attn_rot_v: int | None = None
    attn_rot_disable: int | None = None

    @classmethod
    def parse(cls, text: str | KVConfig) -> KVConfig:
        if isinstance(text, KVConfig):
            return text
        if not isinstance(text, str):
            raise KVConfigError(
                f"KV config must be a string like 'ctk=q8_0,ctv=q8_0', got {text!r}"
            )
        values: dict[str, str | int] = {}
        for raw in text.split(","):
            frag = raw.strip()
            if not frag:
                continue
            if "=" not in frag:
                raise KVConfigError(
                    f"KV config fragment {frag!r} in {text!r} has no '=' (expected key=value, "
                    "e.g. ctk=q8_0)"
                )
            key, _, value = frag.partition("=")
            key, value = key.strip(), value.strip()
            if key in ("ctk", "ctv"):
                if not value:
                    raise KVConfigError(f"KV config key {key!r} in {text!r} has an empty type name")
                values[key] = value
            elif key in _ROT_KEYS:
                try:
                    values[key] = int(value)
                except ValueError:
                    raise KVConfigError(
                        f"KV config key {key!r} in {text!r} needs an integer, got {value!r}"
                    ) from None
            else:
                raise KVConfigError(
                    f"unknown KV config key {key!r} in {text!r}: refract runs llama.cpp "
                    "in-process, "
                    "so there is no command line to pass it to; known keys are ctk, ctv, "
                    + ", ".join(_ROT_KEYS)
                )
        return cls(**values)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        parts = [f"ctk={self.ctk}", f"ctv={self.ctv}"]
        for key in _ROT_KEYS:
            val = getattr(self, key)
            if val is not None:
                parts.append(f"{key}={val}")
        return ",".join(parts)

    def env(self) -> dict[str, str]:
        """llama.cpp environment switches this config sets around its context's creation."""
        return {
            _ROT_ENV[key]: str(getattr(self, key))
            for key in _ROT_KEYS
            if getattr(self, key) is not None
        }

    def __str__(self) -> str:
        return self.label


def short_label(label: str) -> str:
    """A KV label as tables and plots show it: ``ctk=q8_0,ctv=turbo4`` → ``q8_0/turbo4``
    (other keys follow, ``attn_`` dropped: ``q8_0/turbo4 rot_k=0``)."""
    values: dict[str, str] = {}
    extra: list[str] = []
    for frag in label.split(","):
        key, sep, value = frag.strip().partition("=")
        if not sep:
            extra.append(frag.strip())
        elif key.strip() in ("ctk", "ctv"):
            values[key.strip()] = value.strip()
        else:
            extra.append(f"{key.strip().removeprefix('attn_')}={value.strip()}")
    head = f"{values.get('ctk', '?')}/{values.get('ctv', '?')}"
    return " ".join([head, *(e for e in extra if e)])
