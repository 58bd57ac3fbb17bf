"""Provider presets for ``pgagent.register_model(..., preset => ...)``: the protocol, base URL,
tool mode, API-key secret name, prices and context window a provider's models usually need, so
that registering a model is one line. Whatever the caller passes explicitly wins over the preset.

Prices (USD per 1M tokens, input / output) and context windows (tokens) are the providers'
published list prices for text tokens as of 2025 (OpenAI https://openai.com/api/pricing/,
Anthropic https://www.anthropic.com/pricing#api, Google https://ai.google.dev/gemini-api/docs/pricing;
Gemini 2.5 Pro at its price for prompts up to 200k tokens). They change: check them before you
rely on cost reports, and pass ``input_usd_per_mtok``/``output_usd_per_mtok`` to override. A model
that is not listed gets prices 0 (local servers cost nothing per token). A dated model name
(``gpt-4o-mini-2024-07-18``, ``claude-sonnet-4-5-20250929``) or an OpenRouter name with a vendor
prefix (``openai/gpt-4o-mini``) matches its listed family by the longest listed prefix.
"""

from __future__ import annotations

from typing import Any

#: preset -> the register_model fields it fills (provider, base_url, tool_mode, secret_name).
PRESETS: dict[str, dict[str, Any]] = {
    "openai": {"provider": "openai", "base_url": "https://api.openai.com/v1", "tool_mode": "native",
               "secret_name": "openai_api_key"},
    "anthropic": {"provider": "anthropic", "base_url": "https://api.anthropic.com", "tool_mode": "native",
                  "secret_name": "anthropic_api_key"},
    "gemini": {"provider": "gemini", "base_url": "https://generativelanguage.googleapis.com/v1beta",
               "tool_mode": "native", "secret_name": "gemini_api_key"},
    "ollama": {"provider": "ollama", "base_url": "http://127.0.0.1:11434", "tool_mode": "native",
               "secret_name": None},
    "openrouter": {"provider": "openai", "base_url": "https://openrouter.ai/api/v1", "tool_mode": "native",
                   "secret_name": "openrouter_api_key"},
    "vllm": {"provider": "openai", "base_url": "http://127.0.0.1:8000/v1", "tool_mode": "native",
             "secret_name": None},
    # small local models follow a schema-constrained action more reliably than native tool calls
    # (llama.cpp enforces response_format with a grammar); see docs/providers.md
    "llamacpp": {"provider": "openai", "base_url": "http://127.0.0.1:8080/v1", "tool_mode": "json_schema",
                 "secret_name": None},
}

#: Embedding models of these presets use the server's OpenAI-compatible endpoint (provider openai).
EMBEDDING_BASE_URLS = {"ollama": "http://127.0.0.1:11434/v1",
                       "gemini": "https://generativelanguage.googleapis.com/v1beta/openai"}

#: Model family -> (input USD/1M tokens, output USD/1M tokens, context window in tokens).
PRICES: dict[str, tuple[float, float, int]] = {
    # OpenAI
    "gpt-5": (1.25, 10.00, 400_000),
    "gpt-5-mini": (0.25, 2.00, 400_000),
    "gpt-5-nano": (0.05, 0.40, 400_000),
    "gpt-4.1": (2.00, 8.00, 1_047_576),
    "gpt-4.1-mini": (0.40, 1.60, 1_047_576),
    "gpt-4.1-nano": (0.10, 0.40, 1_047_576),
    "gpt-4o": (2.50, 10.00, 128_000),
    "gpt-4o-mini": (0.15, 0.60, 128_000),
    "o3": (2.00, 8.00, 200_000),
    "o4-mini": (1.10, 4.40, 200_000),
    # Anthropic
    "claude-opus-4-1": (15.00, 75.00, 200_000),
    "claude-opus-4": (15.00, 75.00, 200_000),
    "claude-sonnet-4-5": (3.00, 15.00, 200_000),
    "claude-sonnet-4": (3.00, 15.00, 200_000),
    "claude-3-7-sonnet": (3.00, 15.00, 200_000),
    "claude-haiku-4-5": (1.00, 5.00, 200_000),
    "claude-3-5-haiku": (0.80, 4.00, 200_000),
    # Google
    "gemini-2.5-pro": (1.25, 10.00, 1_048_576),
    "gemini-2.5-flash": (0.30, 2.50, 1_048_576),
    "gemini-2.5-flash-lite": (0.10, 0.40, 1_048_576),
    "gemini-2.0-flash": (0.10, 0.40, 1_048_576),
    "gemini-2.0-flash-lite": (0.075, 0.30, 1_048_576),
}


def family(model_name: str) -> str | None:
    """The :data:`PRICES` key that ``model_name`` belongs to: an exact match, else the longest
    listed name that ``model_name`` starts with followed by ``-`` (a dated or suffixed
    version), after dropping a ``vendor/`` prefix (OpenRouter) and a ``models/`` prefix
    (Gemini). None when nothing matches."""
    name = model_name.strip().lower().removeprefix("models/")
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    if name in PRICES:
        return name
    best = None
    for key in PRICES:
        if name.startswith(key + "-") and (best is None or len(key) > len(best)):
            best = key
    return best


def apply(preset: str, m: dict[str, Any]) -> dict[str, Any]:
    """``m`` (register_model's arguments; None = not given) with the preset's values filled in
    where the caller gave none: provider, base_url, tool_mode, secret_name, and, for a listed
    model family, input/output prices (USD per 1M tokens) and context_window (tokens). Returns
    a new dict; ``m`` is not changed.

    Raises ValueError naming the valid presets for an unknown ``preset``, and when an explicit
    ``provider`` contradicts the preset's protocol."""
    p = PRESETS.get(preset)
    if p is None:
        raise ValueError(f"preset {preset!r} is not known; valid: {', '.join(sorted(PRESETS))}")
    if m.get("provider") is not None and m["provider"] != p["provider"] and m.get("kind") != "embedding":
        raise ValueError(f"preset {preset} uses provider {p['provider']}, but provider {m['provider']} was given")
    out = dict(m)
    if out.get("kind") == "embedding" and preset in EMBEDDING_BASE_URLS:
        # embeddings go through the server's OpenAI-compatible endpoint
        p = {**p, "provider": "openai", "base_url": EMBEDDING_BASE_URLS[preset]}
        if out.get("provider") not in (None, "openai"):
            raise ValueError(f"preset {preset} embeds with provider openai (its OpenAI-compatible endpoint), "
                             f"but provider {out['provider']} was given")
    for key in ("provider", "base_url", "tool_mode", "secret_name"):
        if out.get(key) is None:
            out[key] = p[key]
    fam = family(out.get("model_name") or out.get("name") or "")
    if fam is not None:
        price_in, price_out, window = PRICES[fam]
        if out.get("input_usd_per_mtok") is None:
            out["input_usd_per_mtok"] = price_in
        if out.get("output_usd_per_mtok") is None:
            out["output_usd_per_mtok"] = price_out
        if out.get("context_window") is None:
            out["context_window"] = window
    return out
