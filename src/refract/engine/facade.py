"""The Engine facade: one model load, one llama.cpp context per KV config, metrics in-process."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from refract import _core
from refract.defaults import DEFAULT_REFERENCE
from refract.engine.kldstats import KLDResult, summarize_kld
from refract.errors import KVConfigError, ModelError, NonFiniteLogits, UsageError
from refract.inputs.chat import ChatTemplate
from refract.inputs.model import check_model_file
from refract.kvconfig import KVConfig
from refract.system.threads import default_threads

log = logging.getLogger("refract")
llama_log = logging.getLogger("refract.llama")
log.addHandler(logging.NullHandler())

Progress = Callable[[int, int], None]
#: Tokens dropped before a prefix's cut in Engine.corpus_tokens (a cut can change only the
#: tokenization of the text right before it).
CORPUS_CUT_MARGIN = 256
FORK_SWITCHES = ("TURBO_AUTO_ASYMMETRIC", "TURBO_LAYER_ADAPTIVE")
# ggml log levels → logging levels (NONE, DEBUG, INFO, WARN, ERROR, CONT)
_LEVELS = {
    0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR
}


T = TypeVar("T")


class ReferenceCache:
    """Reference-side results computed once per engine and shared by every candidate.

    Keys are tuples that start with the axis name, then the reference label, then every
    setting the result depends on (prompt texts, n_predict, ctx, ...). Values are whatever the
    axis computed (trajectories, answers, drifts). Thread-safe; the engine owns one.

    With a :class:`~refract.engine.store.ReferenceStore` attached (:meth:`use_store`), the
    families in :data:`~refract.engine.store.PERSISTED` are also read from and written to disk,
    keyed by the engine's identity as well; :attr:`events` records what was reused, stored or
    recomputed (the report says so).
    """

    def __init__(self) -> None:
        self._data: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0
        self._store: Any = None
        self._identity: dict[str, Any] | None = None
        #: one dict per persistent lookup: entry family, reference, outcome, reason
        self.events: list[dict[str, Any]] = []

    def use_store(self, store: Any, identity: Callable[[], dict[str, Any]] | None = None) -> None:
        """Attach ``store`` (None detaches); ``identity`` computes the engine's identity, once
        per engine."""
        with self._lock:
            self._store = store
            if store is not None and self._identity is None and identity is not None:
                self._identity = identity()

    def get_or_compute(self, key: tuple[Any, ...], compute: Callable[[], T], *,
                       witness: str | None = None) -> T:
        """The cached value for ``key``; ``compute()`` fills it on the first call. A key of
        a persisted family is looked up in the attached store first (reused only with the
        same ``witness``) and stored after it is computed."""
        from refract.engine.store import MISS, PERSISTED, key_digest

        with self._lock:
            if key in self._data:
                self.hits += 1
                return self._data[key]  # type: ignore[no-any-return]
            store, identity = self._store, self._identity
            digest = None
            event: dict[str, Any] = {}
            if store is not None and identity is not None and key and key[0] in PERSISTED:
                digest = key_digest(identity, key)
                event = {"entry": key[0], "reference": key[1] if len(key) > 1 else None,
                         "entry_id": digest[:16]}
                got, why = store.load(digest, witness)
                if got is not MISS:
                    self.hits += 1
                    self._data[key] = got
                    self.events.append({**event, "outcome": "reused"})
                    return got  # type: ignore[no-any-return]
                if why is not None:
                    event["recomputed_because"] = why
            self.misses += 1
            value = compute()
            self._data[key] = value
            if digest is not None and identity is not None:
                try:
                    store.save(digest, value, family=str(key[0]), reference=str(key[1]),
                               identity=identity, witness=witness)
                    self.events.append({**event, "outcome": "stored"})
                except (OSError, TypeError, ValueError) as exc:
                    why = " ".join(str(exc).split()) or type(exc).__name__
                    log.warning("reference store: could not store %s: %s", key[0], why)
                    self.events.append({**event, "outcome": "not stored", "reason": why})
            return value

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        with self._lock:
            return key in self._data

    def keys(self) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def _ids(a: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(a), dtype=np.int32)
    if arr.ndim != 1:
        raise UsageError(f"token ids must be 1-D, got shape {arr.shape}")
    return arr


class Engine:
    """A GGUF model loaded once in-process, with one llama.cpp context per KV config.

    >>> eng = Engine("model.gguf")
    >>> [res] = eng.kld(text, candidates=["ctk=q8_0,ctv=q8_0"], chunks=4)
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_threads: int | None = None,
        n_gpu_layers: int = -1,
        flash_attn: bool = True,
        seed: int = 42,
        vocab_only: bool = False,
    ) -> None:
        """``vocab_only`` loads the vocabulary, hyperparameters and metadata and no tensors: it
        tokenizes and renders prompts (to refuse impossible inputs before the real load) and
        can make no context."""
        path = check_model_file(model_path)
        if n_threads is not None and n_threads < 1:
            raise UsageError(f"n_threads must be >= 1, got {n_threads}")
        self.model_path = path
        self.seed = seed
        self.flash_attn = flash_attn
        self.n_gpu_layers = n_gpu_layers
        # The TurboQuant fork silently rewrites requested types unless these are off (SPEC §2);
        # the user's own setting wins. Set through os.environ so Python and llama.cpp agree.
        for key in FORK_SWITCHES:
            os.environ.setdefault(key, "0")
        self.fork_switches = {key: os.environ[key] for key in FORK_SWITCHES}
        try:
            self._model: Any = _core.Model(str(path), n_gpu_layers,
                                           n_threads or default_threads(), flash_attn,
                                           vocab_only)
        except ValueError as err:  # llama.cpp refused the file
            raise ModelError(str(err)) from None
        finally:
            self._drain_log()
        self.n_threads: int = self._m.n_threads
        self._chat: ChatTemplate | None = None
        #: reference results shared by every candidate scored on this engine
        self.reference_cache = ReferenceCache()
        #: kv_probe results per KV label (they depend on the config alone within a process)
        self._kv_probes: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ info
    @property
    def model_info(self) -> dict[str, Any]:
        info = dict(self._m.info)
        info.pop("chat_template", None)
        info["path"] = str(self.model_path)
        return info

    @property
    def chat_template(self) -> str | None:
        template: str | None = self._m.info["chat_template"]
        return template

    @property
    def build_info(self) -> dict[str, Any]:
        return build_info()

    def kv_types(self) -> list[str]:
        return list(_core.kv_types())

    def metadata(self) -> dict[str, str]:
        return dict(self._m.metadata())

    def kv_allocations(self) -> dict[str, list[dict[str, Any]]]:
        """K/V types llama.cpp actually allocated, per KV label, per layer group."""
        return {k: list(v) for k, v in self._call(self._m.allocations).items()}

    def kv_probe(self, kv: str | KVConfig) -> dict[str, Any]:
        """What llama.cpp allocates for ``kv``, from two short-lived contexts: ``layers``, the
        K/V type of each layer's cache as its graph reads it (a one-token probe: what was
        allocated, layer by layer, whatever was asked); ``bytes_per_token``, the KV bytes one
        more cell costs (the difference of the two contexts' allocations over their cell
        difference, exact); ``fixed_bytes``, what does not grow with the context (the
        TurboQuant fork's rotation matrices). Byte figures are None where the linked llama.cpp
        cannot report its allocations. Probed once per KV label and engine (every report of a
        multi-candidate run asks for every label)."""
        req = self.kv(kv)
        cached = self._kv_probes.get(req.label)
        if cached is None:
            cached = self._kv_probes[req.label] = self._probe(req)
        return {**cached, "layers": [dict(x) for x in cached["layers"]]}

    def _probe(self, req: Any) -> dict[str, Any]:
        raw = self._call(self._m.kv_probe, req)
        layers = [dict(x) for x in raw["layers"]]
        per: int | None = None
        fixed: int | None = None
        points = [(int(c), int(b)) for c, b in raw["points"]]
        if len(points) == 2 and points[1][0] > points[0][0]:
            (c0, b0), (c1, b1) = points
            if (b1 - b0) % (c1 - c0) == 0:
                per = (b1 - b0) // (c1 - c0)
                fixed = b0 - per * c0
        return {"layers": layers, "bytes_per_token": per, "fixed_bytes": fixed}

    def kv_layer_types(self, kv: str | KVConfig) -> list[dict[str, Any]]:
        """The K/V type of each layer's cache as llama.cpp's graph reads it (see kv_probe)."""
        return list(self.kv_probe(kv)["layers"])

    def kv_bytes(self) -> dict[str, dict[str, int | None]]:
        """KV-cache bytes llama.cpp allocated, per KV label (the last context this engine made
        for it): ``bytes`` (exact, from llama.cpp's memory breakdown; None where the linked
        llama.cpp cannot say) and ``cells``. Per-token figures: :meth:`kv_probe`."""
        out: dict[str, dict[str, int | None]] = {}
        for label, entry in dict(self._call(self._m.kv_bytes)).items():
            raw, cells = entry["bytes"], int(entry["cells"])
            out[str(label)] = {"bytes": None if raw is None else int(raw), "cells": cells}
        return out

    def context_stats(self) -> dict[str, int]:
        """Contexts created and evicted by this engine so far, and how many are cached now."""
        return dict(self._call(self._m.context_stats))

    def estimate_context(
        self, kv: str | KVConfig, n_ctx_seq: int, n_seq: int = 1, n_outputs: int = 0
    ) -> dict[str, int]:
        """Bytes one context would allocate, before it exists: ``kv`` (KV cache at llama.cpp's
        padded cell count), ``output`` (float logits for ``n_outputs`` rows per batch),
        ``compute`` (an allowance for the graph's work buffer), ``total`` and ``cells``."""
        if n_ctx_seq < 1 or n_seq < 1 or n_outputs < 0:
            raise UsageError(
                f"need n_ctx_seq >= 1, n_seq >= 1, n_outputs >= 0; got {n_ctx_seq}, {n_seq}, "
                f"{n_outputs}"
            )
        req = self.kv(kv)
        return dict(self._m.estimate(req, n_ctx_seq, n_seq, n_outputs))

    def estimate_context_bytes(
        self, kv: str | KVConfig, n_ctx_seq: int, n_seq: int = 1, n_outputs: int = 0
    ) -> int:
        """Total of :meth:`estimate_context` (pass it to ``refract.system.memory.check_fits``)."""
        return int(self.estimate_context(kv, n_ctx_seq, n_seq, n_outputs)["total"])

    def shadow_buffer_bytes(self, n_ctx_seq: int, n_seq: int) -> int:
        """Reference logit rows :meth:`greedy_teacher_forced` holds at once, in bytes."""
        return int(_core.shadow_buffer_bytes(n_seq, int(self.model_info["n_vocab"]), n_ctx_seq))

    def interrupt(self) -> None:
        """Stop the call running on this engine in another thread (it raises
        KeyboardInterrupt there). Ctrl-C does the same for a call in the main thread."""
        model = self.__dict__.get("_model")
        if model is not None:
            model.interrupt()

    # ------------------------------------------------------------------ tokens
    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = False
    ) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        ids: np.ndarray = self._call(self._m.tokenize, text, add_special, parse_special)
        return ids

    def corpus_tokens(self, text: str, ctx: int, chunks: int) -> tuple[np.ndarray, int]:
        """The first tokens of ``text`` that ``chunks`` windows of ``ctx`` need, without
        tokenizing all of it; returns ``(ids, characters_tokenized)``.

        The ids equal the start of ``tokenize(text)`` (BOS included, as llama-perplexity
        tokenizes the whole corpus): growing prefixes cut after a line break are tokenized
        until one yields :data:`CORPUS_CUT_MARGIN` tokens more than needed, and the tokens
        near the cut are dropped. A text too short for that is tokenized whole.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if ctx < 1 or chunks < 1:
            raise UsageError(f"ctx and chunks must be >= 1, got {ctx} and {chunks}")
        need = ctx * chunks
        size = max(need * 8, 1 << 16)
        while size < len(text):
            cut = text.rfind("\n", size // 2, size)
            end = cut + 1 if cut >= 0 else size
            ids = self.tokenize(text[:end])
            if ids.size >= need + CORPUS_CUT_MARGIN:
                return np.ascontiguousarray(ids[:need]), end
            size *= 2
        ids = self.tokenize(text)
        return ids, len(text)

    def detokenize(self, ids: Sequence[int] | np.ndarray, special: bool = False) -> str:
        raw: bytes = self._call(self._m.detokenize, _ids(ids), special)
        return raw.decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(self._m.is_eog(int(token)))

    # ------------------------------------------------------------------ KV configs
    def kv(self, config: str | KVConfig, *, slot: int = 0) -> Any:
        """Parse and validate a KV config against this model; returns the native request."""
        cfg = KVConfig.parse(config)
        req = _core.KV(cfg.ctk, cfg.ctv, cfg.env(), cfg.label, slot)
        self._call(self._m.validate, req)
        return req

    # ------------------------------------------------------------------ Axis B
    def kld(
        self,
        corpus: str | Sequence[int] | np.ndarray,
        reference: str | KVConfig = DEFAULT_REFERENCE,
        candidates: Sequence[str | KVConfig] = ("ctk=q8_0,ctv=q8_0",),
        *,
        ctx: int = 512,
        chunks: int = 32,
        progress: Progress | None = None,
    ) -> list[KLDResult]:
        """Teacher-forced KL divergence of each candidate against the reference on a corpus.

        ``corpus`` is text (tokenized once with BOS, as llama-perplexity does) or token ids.
        The reference decodes each window once; every candidate is compared against its logits.
        """
        self._check_ctx(ctx)
        if chunks < 1:
            raise UsageError(f"chunks must be >= 1, got {chunks}")
        if isinstance(candidates, (str, KVConfig)):
            candidates = [candidates]
        if not candidates:
            raise UsageError("at least one candidate KV config is needed")
        ref_req = self.kv(reference, slot=0)
        cand_cfgs = [KVConfig.parse(c) for c in candidates]
        labels = [c.label for c in cand_cfgs]
        if len(set(labels)) != len(labels):
            raise KVConfigError(f"duplicate candidate KV configs: {labels}")
        cand_reqs = [self.kv(c, slot=1) for c in cand_cfgs]
        tokens = self.tokenize(corpus) if isinstance(corpus, str) else _ids(corpus)
        raw = self._call(
            self._m.kld_corpus, ref_req, cand_reqs, tokens, ctx, chunks, progress or _noop
        )
        ref_label = KVConfig.parse(reference).label
        # a broken reference measures nothing; a broken candidate is reported invalid
        _raise_nonfinite(raw["candidates"][:1], "n_nonfinite_ref", [ref_label], "kld")
        return [
            summarize_kld(
                rows,
                reference=ref_label,
                candidate=label,
                n_chunks=raw["n_chunks"],
                ctx=raw["ctx"],
                scored_per_chunk=raw["scored_per_chunk"],
                n_corpus_tokens=raw["n_tokens"],
                seed=self.seed,
            )
            for label, rows in zip(labels, raw["candidates"], strict=False)
        ]

    def compare_sequence(
        self,
        tokens: Sequence[int] | np.ndarray,
        reference: str | KVConfig,
        candidates: Sequence[str | KVConfig],
        *,
        first: int,
        last: int | None = None,
        ctx: int | None = None,
    ) -> list[dict[str, np.ndarray]]:
        """Teacher-forced comparison along one token sequence (per-position KLD, Δp, ranks)."""
        ids = _ids(tokens)
        n_ctx = ctx or max(64, int(ids.size))
        self._check_ctx(n_ctx)
        ref_req = self.kv(reference, slot=0)
        cand_reqs = [self.kv(c, slot=1) for c in candidates]
        stop = ids.size - 2 if last is None else last
        out: list[dict[str, np.ndarray]] = self._call(
            self._m.compare, ref_req, cand_reqs, ids, first, stop, n_ctx
        )
        _raise_nonfinite(out[:1], "n_nonfinite_ref", [ref_req.label], "compare")
        _raise_nonfinite(out, "n_nonfinite_cand", [c.label for c in cand_reqs], "compare")
        return out

    # ------------------------------------------------------------------ generation
    def greedy(
        self,
        prompts: Sequence[str | Sequence[int] | np.ndarray],
        kv: str | KVConfig = DEFAULT_REFERENCE,
        n_predict: int = 128,
        ctx: int = 512,
        chat_template: bool = False,
        *,
        sequential: bool = False,
        group: int = 64,
        topk: int = 0,
        progress: Progress | None = None,
        _slot: int = 0,
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Greedy continuation of every prompt; returns one int32 id array per prompt.

        Prompts decode together as parallel sequences of one context (``sequential=True``
        decodes one at a time). The end-of-generation token that stopped a sequence is
        included. With ``topk > 0`` also returns, per prompt, [steps, topk] ids and
        log-probabilities of each step's distribution.
        """
        toks, top_ids, top_lps, _ = self._greedy_call(
            prompts, self.kv(kv, slot=_slot), [], n_predict, ctx, chat_template,
            1 if sequential else group, topk, progress,
        )
        if topk > 0:
            return list(toks), list(top_ids), list(top_lps)
        return list(toks)

    def greedy_teacher_forced(
        self,
        prompts: Sequence[str | Sequence[int] | np.ndarray],
        reference: str | KVConfig,
        candidates: Sequence[str | KVConfig],
        n_predict: int = 128,
        ctx: int = 512,
        chat_template: bool = False,
        *,
        sequential: bool = False,
        group: int = 64,
        topk: int = 0,
        progress: Progress | None = None,
        until_divergence: bool = False,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[list[dict[str, Any]]]]:
        """The reference's greedy continuations (as :meth:`greedy` with ``topk``) and, per
        candidate, per prompt, the teacher-forced comparison along that trajectory (the rows
        :meth:`compare_sequence` gives, one per generated token), from one reference decode.

        Each candidate decodes exactly the tokens the reference decodes, in its own context
        (see ``greedy`` in csrc/decode.hpp); the reference's rows are the very rows that chose
        each token. With ``until_divergence`` a candidate's rows of a prompt end at the first
        whose top-1 is not the reference token (that row included); it still decodes that
        prompt's later tokens (its KV cells stay those of the full pass) without their logits.
        Raises :class:`NonFiniteLogits` for the reference or the first candidate whose logits
        held a NaN or an infinity.
        """
        cand_reqs = [self.kv(c, slot=1) for c in candidates]
        toks, top_ids, top_lps, shadow = self._greedy_call(
            prompts, self.kv(reference, slot=0), cand_reqs, n_predict, ctx, chat_template,
            1 if sequential else group, topk, progress, until_divergence,
        )
        for c, per_prompt in zip(cand_reqs, shadow, strict=True):
            n_c = sum(int(r["n_nonfinite_cand"]) for r in per_prompt)
            if n_c:
                raise NonFiniteLogits(c.label, n_c, sum(int(r["kld"].size) for r in per_prompt),
                                      "compare")
        return list(toks), list(top_ids), list(top_lps), [list(x) for x in shadow]

    def _greedy_call(
        self, prompts: Sequence[str | Sequence[int] | np.ndarray], req: Any, shadows: list[Any],
        n_predict: int, ctx: int, chat_template: bool, group: int, topk: int,
        progress: Progress | None, until_divergence: bool = False,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[Any]]:
        """The one call into the native greedy decode (``shadows``: KV requests teacher-forced
        along it); checks the arguments first and the generating config's logits after."""
        if isinstance(prompts, (str, bytes)):
            raise TypeError(
                "prompts must be a list of prompts, not one string (it would decode one prompt "
                "per character): use greedy([text], ...)"
            )
        if n_predict < 1:
            raise UsageError(f"n_predict must be >= 1, got {n_predict}")
        self._check_ctx(ctx)
        ids = [self.prompt_ids(p, chat_template=chat_template) for p in prompts]
        toks, top_ids, top_lps, (n_bad, n_rows), shadow = self._call(
            self._m.greedy, req, ids, n_predict, ctx, group, topk, progress or _noop, shadows,
            until_divergence,
        )
        if n_bad:
            raise NonFiniteLogits(req.label, int(n_bad), int(n_rows), "greedy")
        return list(toks), list(top_ids), list(top_lps), list(shadow)

    def generate_one(
        self,
        prompt: str | Sequence[int] | np.ndarray,
        kv: str | KVConfig,
        *,
        n_predict: int,
        ctx: int,
        probe: Sequence[int] | np.ndarray = (),
        chat_template: bool = False,
        system: str | None = None,
        _slot: int = 0,
    ) -> dict[str, Any]:
        """One prompt in a single-sequence context, reusing the KV of a shared prefix with the
        previous prompt there; ``probe`` tokens get teacher-forced log-probs and ranks."""
        self._check_ctx(ctx)
        req = self.kv(kv, slot=_slot)
        ids = self.prompt_ids(prompt, chat_template=chat_template, system=system)
        out: dict[str, Any] = self._call(
            self._m.generate_one, req, ids, _ids(probe), n_predict, ctx
        )
        if out["n_nonfinite_rows"]:
            raise NonFiniteLogits(
                req.label, int(out["n_nonfinite_rows"]), int(out["n_rows"]), "generate"
            )
        return out

    def generate_cells(
        self,
        groups: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
        kv: str | KVConfig,
        *,
        n_predict: int,
        ctx: int,
        stop: str = "",
        progress: Progress | None = None,
        _slot: int = 0,
    ) -> dict[str, Any]:
        """Groups of (prompt ids, probe ids) cells: each group decodes as parallel sequences of
        one context, prompts reusing the KV of the longest prefix any sequence holds; greedy,
        stopping a cell once ``stop`` appears in its output (see csrc/generate.hpp). Raises
        :class:`NonFiniteLogits` when a logit row read held a NaN or an infinity."""
        self._check_ctx(ctx)
        req = self.kv(kv, slot=_slot)
        gs = [[(_ids(p), _ids(q)) for p, q in g] for g in groups]
        out: dict[str, Any] = self._call(_core.generate_cells, self._m, req, gs, n_predict, ctx,
                                         stop, progress or _noop)
        if out["n_nonfinite_rows"]:
            raise NonFiniteLogits(req.label, int(out["n_nonfinite_rows"]), int(out["n_rows"]),
                                  "generate")
        return out

    def bench_decode(
        self,
        prompts: Sequence[np.ndarray],
        kv: str | KVConfig,
        n_gen: Sequence[int],
        *,
        ctx: int,
        group: int = 64,
        logits_from: int = -1,
    ) -> dict[str, Any]:
        """Benchmark floor: the same prompts and token counts through a bare llama_decode loop
        (logits at each prompt's end, and at every position >= ``logits_from`` if >= 0)."""
        self._check_ctx(ctx)
        req = self.kv(kv, slot=0)
        out: dict[str, Any] = self._call(
            _core.bench_decode, self._m, req, [_ids(p) for p in prompts],
            [int(n) for n in n_gen], ctx, group, logits_from)
        return out

    def prompt_ids(
        self,
        prompt: str | Sequence[int] | np.ndarray,
        *,
        chat_template: bool = False,
        system: str | None = None,
    ) -> np.ndarray:
        """Token ids for a prompt: raw text with BOS, or the model's chat template rendered."""
        if not isinstance(prompt, str):
            return _ids(prompt)
        if not chat_template:
            return self.tokenize(prompt, add_special=True)
        text = self.render_chat(prompt, system=system)
        # as llama.cpp does: the template's own BOS text is stripped, the vocab adds BOS once
        return self.tokenize(text, add_special=True, parse_special=True)

    @property
    def chat(self) -> ChatTemplate:
        """The model's chat template (ChatML when the GGUF has none), rendered in a sandbox."""
        if self._chat is None:
            info = self._m.info
            self._chat = ChatTemplate(
                info["chat_template"],
                model_name=self.model_path.name,
                bos_token=info["bos_text"],
                eos_token=info["eos_text"],
            )
        return self._chat

    def render_chat(self, user: str, *, system: str | None = None) -> str:
        return self.chat.render(user, system, strip_bos=bool(self._m.info["add_bos"]))

    def release(self) -> None:
        """Free every llama.cpp context (they are recreated on demand)."""
        self._m.release_contexts()

    def close(self) -> None:
        model = self.__dict__.get("_model")
        if model is not None:
            model.release_contexts()
            self._model = None

    @property
    def closed(self) -> bool:
        return self.__dict__.get("_model") is None

    @property
    def _m(self) -> Any:
        """The native model; a closed engine says so instead of failing on ``None``."""
        model = self.__dict__.get("_model")
        if model is None:
            raise RuntimeError("the engine is closed")
        return model

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def check_ctx(self, ctx: int) -> None:
        """A context size this model can take (``ValueError`` naming both otherwise)."""
        self._check_ctx(ctx)

    def _check_ctx(self, ctx: int) -> None:
        n_train = int(self._m.info["n_ctx_train"])
        if not isinstance(ctx, int) or ctx <= 0:
            raise UsageError(f"ctx must be a positive integer, got {ctx!r}")
        if n_train > 0 and ctx > n_train:
            raise UsageError(f"ctx {ctx} exceeds the model's training context {n_train}")

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        finally:
            self._drain_log()

    @staticmethod
    def _drain_log() -> None:
        for level, line in _core.drain_log():
            if line.strip():
                llama_log.log(_LEVELS.get(level, logging.DEBUG), "%s", line)


def _noop(done: int, total: int) -> None:
    return None


def _raise_nonfinite(
    rows: Sequence[dict[str, Any]], key: str, labels: Sequence[str], where: str
) -> None:
    """Raise NonFiniteLogits for the first row set whose ``key`` count is non-zero."""
    for r, label in zip(rows, labels, strict=False):
        n_bad = int(r[key])
        if n_bad:
            raise NonFiniteLogits(label, n_bad, int(r["kld"].size), where)


def build_info() -> dict[str, Any]:
    """What the extension was built from and what it can do.

    ``llama_cpp_flavour`` is the flavour of the llama.cpp tree (``upstream`` or ``turboquant``
    for the pinned trees, ``custom`` for any other REFRACT_LLAMA_CPP_DIR tree), and
    ``turbo_kv_types`` the TurboQuant KV types the linked build has (empty upstream)."""
    kv_types = list(_core.kv_types())
    # an editable install whose extension predates the binding (rebuilt by the next install)
    flavour = getattr(_core, "llama_cpp_flavour", None)
    return {
        "llama_cpp_flavour": flavour() if flavour is not None else "unknown",
        "llama_cpp_commit": _core.llama_cpp_commit(),
        "llama_cpp_source": _core.llama_cpp_source(),
        "backends": list(_core.backends()),
        "kv_types": kv_types,
        "turbo_kv_types": [t for t in kv_types if t.startswith("turbo")],
        "system_info": _core.system_info().strip(),
    }
