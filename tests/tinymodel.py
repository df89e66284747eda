"""Synthesize tiny llama-architecture GGUF models with the `gguf` package (random weights).

Two layers, head dim 128 (or 64), an SPM vocabulary with the 256 byte tokens plus a few
hundred word pieces, so arbitrary text tokenizes. Seconds to write, no download.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = (
    "the of and to in is was for on that with as by at from his her it an were are which this "
    "be or has had not but first one their its new after who they have two been also year "
    "time during more most other some would into can only only could over world city state "
    "capital france paris ocean earth water gold number plus equals answer question note rare "
    "paint color article featured blue apricot seven big large small tiny fast quick begin start "
    "happy sad smart clever show display build make create find locate"
).split()


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [2, 3, 3, 3, 3]  # UNKNOWN, CONTROL...
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(6)  # BYTE
    pieces: list[str] = ["\u2581"]
    pieces += list(string.ascii_letters + string.digits + string.punctuation)
    pieces += ["\u2581" + c for c in string.ascii_letters + string.digits]
    seen = set(tokens)
    for w in _WORDS:
        for p in (w, "\u2581" + w, "\u2581" + w.capitalize()):
            if p not in seen:
                pieces.append(p)
                seen.add(p)
    uniq = [p for p in dict.fromkeys(pieces) if p not in set(tokens)]
    tokens += uniq
    types += [1] * len(uniq)  # NORMAL
    # longer pieces score higher so SPM prefers them
    scores = [0.0] * (261) + [float(len(p)) for p in uniq]
    return tokens, scores, types


def write_tiny_model(
    path: str | Path,
    *,
    head_dim: int = 128,
    n_head: int = 2,
    n_head_kv: int = 2,
    n_layer: int = 2,
    n_ff: int = 384,
    n_ctx_train: int = 4096,
    seed: int = 0,
    chat_template: str | None = None,
    eos_id: int = 2,
    logit_scale: float = 1.0,
) -> Path:
    import gguf

    path = Path(path)
    rng = np.random.default_rng(seed)
    n_embd = head_dim * n_head
    n_embd_kv = head_dim * n_head_kv
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("refract-tiny")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(eos_id)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    def mat(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd, 1.0))
    for i in range(n_layer):
        s = 1.0 / np.sqrt(n_embd)
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", mat(n_embd, n_embd, s))
        w.add_tensor(f"blk.{i}.attn_k.weight", mat(n_embd_kv, n_embd, s))
        w.add_tensor(f"blk.{i}.attn_v.weight", mat(n_embd_kv, n_embd, s))
        w.add_tensor(f"blk.{i}.attn_output.weight", mat(n_embd, n_embd, s))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", mat(n_ff, n_embd, s))
        w.add_tensor(f"blk.{i}.ffn_up.weight", mat(n_ff, n_embd, s))
        w.add_tensor(f"blk.{i}.ffn_down.weight", mat(n_embd, n_ff, 1.0 / np.sqrt(n_ff)))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", mat(n_vocab, n_embd, logit_scale / np.sqrt(n_embd) * 4.0))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
