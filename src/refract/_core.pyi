"""
refract's native engine: llama.cpp in-process, metrics on its logit buffers
"""

from collections.abc import Mapping, Sequence
from typing import Annotated, overload

import numpy
from numpy.typing import NDArray


def llama_cpp_commit() -> str:
    """llama.cpp commit the extension was built from"""

def llama_cpp_source() -> str:
    """where that llama.cpp tree came from"""

def llama_cpp_flavour() -> str:
    """
    which llama.cpp flavour that tree is: upstream, turboquant (pinned trees) or custom
    """

def backends() -> list[str]:
    """ggml backends compiled in"""

def system_info() -> str:
    """llama.cpp's system info line"""

def kv_types() -> list[str]:
    """KV cache type names the linked build supports"""

def type_row_size(name: str, n: int) -> int:
    """
    bytes ggml stores n values of that type in (its block size and bytes per block)
    """

def cpu_buffer_types() -> list[str]:
    """
    the CPU device's weight buffer types (default first, then repacked / AMX ones)
    """

def matmul_probe(buffer_type: str, n_threads: int = 2) -> list:
    """
    one real MUL_MAT per probe weight type held in that buffer type, against a double reference (run it in a child process: a kernel the CPU cannot run kills the process)
    """

def drain_log() -> list[tuple[int, str]]:
    """llama.cpp log lines (ggml level, text) captured since the last call"""

def kld_rows(ref_logits: Annotated[NDArray, dict(writable=False)], cand_logits: Annotated[NDArray, dict(writable=False)], next_tokens: object | None = None, n_threads: int = 0) -> dict:
    """
    Per row: KL(ref||cand) (nats), dp, logp_ref/logp_cand of next, argmax of both, ranks, same_top1; nonfinite_ref/nonfinite_cand flag rows holding NaN or infinite logits on that side (their kld, dp and logp are NaN, that side's argmax and rank -1) and n_nonfinite_ref/n_nonfinite_cand count them.
    """

class KV:
    @overload
    def __init__(self) -> None: ...

    @overload
    def __init__(self, type_k: str, type_v: str, env: Mapping[str, str], label: str, slot: int = 0) -> None: ...

    @property
    def type_k(self) -> str: ...

    @type_k.setter
    def type_k(self, arg: str, /) -> None: ...

    @property
    def type_v(self) -> str: ...

    @type_v.setter
    def type_v(self, arg: str, /) -> None: ...

    @property
    def env(self) -> dict[str, str]: ...

    @env.setter
    def env(self, arg: Mapping[str, str], /) -> None: ...

    @property
    def label(self) -> str: ...

    @label.setter
    def label(self, arg: str, /) -> None: ...

    @property
    def slot(self) -> int: ...

    @slot.setter
    def slot(self, arg: int, /) -> None: ...

class Model:
    def __init__(self, path: str, n_gpu_layers: int = -1, n_threads: int = 0, flash_attn: bool = True, vocab_only: bool = False) -> None: ...

    @property
    def info(self) -> dict: ...

    @property
    def n_threads(self) -> int: ...

    def metadata(self) -> dict[str, str]: ...

    def is_eog(self, token: int) -> bool: ...

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> NDArray[numpy.int32]: ...

    def detokenize(self, ids: Annotated[NDArray[numpy.int32], dict(shape=(None,), order='C', device='cpu', writable=False)], special: bool = False) -> bytes: ...

    def validate(self, kv: KV) -> None: ...

    def greedy(self, kv: KV, prompts: Sequence[Annotated[NDArray[numpy.int32], dict(shape=(None,), order='C', device='cpu', writable=False)]], n_predict: int, n_ctx_seq: int, group: int = 64, topk: int = 0, progress: object | None = None, shadows: Sequence[KV] = [], until_divergence: bool = False) -> tuple:
        """
        Greedy continuations: (tokens, topk_ids, topk_logprobs, (n_nonfinite_rows, n_rows), shadow_rows), (n_nonfinite_rows, n_rows) counting the logits rows read and those holding NaN or infinite values; shadow_rows holds, per shadow KV config, per prompt, the teacher-forced comparison rows (as from compare) of each generated token (with until_divergence, up to and including the first whose top-1 is not that token).
        """

    def generate_one(self, kv: KV, prompt: Annotated[NDArray[numpy.int32], dict(shape=(None,), order='C', device='cpu', writable=False)], probe: Annotated[NDArray[numpy.int32], dict(shape=(None,), order='C', device='cpu', writable=False)], n_predict: int, n_ctx_seq: int) -> dict: ...

    def compare(self, ref: KV, cands: Sequence[KV], tokens: Annotated[NDArray[numpy.int32], dict(shape=(None,), order='C', device='cpu', writable=False)], first: int, last: int, n_ctx_seq: int) -> list: ...

    def kld_corpus(self, ref: KV, cands: Sequence[KV], tokens: Annotated[NDArray[numpy.int32], dict(shape=(None,), order='C', device='cpu', writable=False)], ctx: int, chunks: int, progress: object | None = None) -> dict: ...

    def allocations(self) -> dict: ...

    def kv_probe(self, req: KV) -> dict:
        """
        K/V type of each layer's cache tensor as llama.cpp's graph reads it (one probe token in a short-lived context, recorded by llama.cpp's evaluation callback), and the KV bytes (cells, bytes) llama.cpp allocated for contexts of two sizes
        """

    def kv_bytes(self) -> dict:
        """
        KV bytes llama.cpp allocated for the last context of each KV label, and its cells
        """

    def release_contexts(self) -> None: ...

    def interrupt(self) -> None:
        """
        Stop the call running on this model (from another thread): it raises KeyboardInterrupt. No effect when no call is running.
        """

    def context_stats(self) -> dict:
        """contexts created and evicted so far, and cached now"""

    def estimate(self, kv: KV, n_ctx_seq: int, n_seq: int = 1, n_outputs: int = 0) -> dict:
        """
        bytes a context would allocate: KV cache, logits output buffer, compute allowance
        """

def shadow_buffer_bytes(n_seq: int, n_vocab: int, n_ctx_seq: int) -> int:
    """
    Bytes of reference logit rows a greedy decode with teacher-forced candidates holds at once.
    """

def generate_cells(model: Model, kv: KV, groups: Sequence[Sequence[tuple[Annotated[NDArray[numpy.int32], dict(shape=(None,), order='C', device='cpu', writable=False)], Annotated[NDArray[numpy.int32], dict(shape=(None,), order='C', device='cpu', writable=False)]]]], n_predict: int, n_ctx_seq: int, stop: str = '', progress: object | None = None) -> dict:
    """
    Groups of (prompt, probe) cells decoded as parallel sequences sharing common prefixes (see generate.hpp).
    """

def bench_decode(model: Model, kv: KV, prompts: Sequence[Annotated[NDArray[numpy.int32], dict(shape=(None,), order='C', device='cpu', writable=False)]], n_gen: Sequence[int], n_ctx_seq: int, group: int = 64, logits_from: int = -1) -> dict:
    """
    Benchmark floor: a bare llama_decode loop (prefill, then n_gen tokens per prompt), timed.
    """

def chunk_plan(n_tokens: int, ctx: int, chunks: int) -> tuple:
    """
    llama-perplexity's chunking: (n_chunks, first scored position, last scored position)
    """
