"""The one table of ``DELTAINV_*`` environment variables, parsed into a frozen :class:`Settings`.

Everything that configures the engine hooks is read from here, and only here: the engine entry
points, :func:`deltainv.plugin.install`, ``deltainv doctor``, and (through :data:`VARIABLES`)
``deltainv serve`` and the ``deploy/`` checks. Method and precision names are exactly the
registry's (:data:`deltainv.kernels.METHODS`, :data:`deltainv.kernels.PRECISIONS`).

Bad values raise :class:`SettingsError` naming the variable, the value and the choices; a bad
value never silently means "off".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from deltainv.kernels.registry import BACKENDS, DEFAULT_PRECISION, METHODS, get_method, resolve
from deltainv.kernels.precision import PRECISIONS

#: The chunk size the engines' GDN and KDA kernels invert (fla's, vLLM's and SGLang's ``BT``).
ENGINE_CHUNK_SIZE = 64

#: ``DELTAINV_*`` variables read elsewhere than :class:`Settings` (any other name is a typo).
OTHER_VARIABLES: Mapping[str, str] = MappingProxyType({
    "DELTAINV_API_KEY": "deltainv serve: the API key clients must send (see `deltainv serve --help`)",
    "DELTAINV_ENGINE_VENVS": "scripts/setup.sh: which engine environments to create",
    "DELTAINV_EXTRAS": "scripts/setup.sh: which extras to install",
    "DELTAINV_VENV": "scripts/setup.sh: where to create the environment",
    "DELTAINV_TEST_SEED": "tests: the session's random seed",
})

#: Engine-hook target groups (see :mod:`deltainv.plugin.targets`), in presentation order.
TARGET_GROUPS: tuple[str, ...] = ("fla", "vllm", "vllm_cpu", "sglang", "transformers")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A ``DELTAINV_*`` variable holds a value deltainv does not accept."""


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, default (as the string a user would write), allowed
    values (``None``: free-form, checked by the parser) and what it does."""

    name: str
    default: str
    choices: tuple[str, ...] | None
    help: str


def _bool_choices() -> tuple[str, ...]:
    return ("0", "1")


#: The table. ``deltainv serve`` and ``deploy/`` tests check their flags against it.
VARIABLES: tuple[Variable, ...] = (
    Variable(
        "DELTAINV_METHOD", "off", ("off", *METHODS),
        "Inversion method for every patched engine function; unset or 'off' leaves the engines untouched.",
    ),
    Variable(
        "DELTAINV_PRECISION", DEFAULT_PRECISION, PRECISIONS,
        "Operand precision of the method's matrix products (the registry's precision vocabulary).",
    ),
    Variable(
        "DELTAINV_WU_PRECISION", "auto", ("auto", *PRECISIONS),
        "Operand precision of the W = T (beta exp(G) K) and U = T (beta V) products in the GDN and KDA intra "
        "drop-ins: auto follows the dtype W/U are stored in (bf16 models: bf16 operands, fla's recipe and its "
        "error class; fp32: tf32x3); tf32x3 keeps the products fp32-accurate on bf16 models at a speed cost.",
    ),
    Variable(
        "DELTAINV_OPTIONS", "", None,
        "Method options as comma-separated key=value, e.g. 'refine_precision=tf32x3' (mxr_refine) or "
        "'iters=14' (newton_schulz); checked against the method's options in the registry.",
    ),
    Variable(
        "DELTAINV_BACKEND", "auto", ("auto", *BACKENDS),
        "Kernel backend for the inversion drop-ins: auto (Triton on CUDA when deltainv's Triton kernels "
        "and a GPU are there, else PyTorch), torch or triton.",
    ),
    Variable(
        "DELTAINV_TARGETS", "all", None,
        f"Comma-separated target groups to patch ({', '.join(TARGET_GROUPS)}) or 'all'.",
    ),
    Variable(
        "DELTAINV_STRICT", "0", _bool_choices(),
        "1: an unknown engine version, a missing target or a changed signature is an error instead of "
        "a warning (the engine's own kernel is kept either way without it).",
    ),
    Variable(
        "DELTAINV_GUARD", "1", _bool_choices(),
        "1: check every patched call's inverse (or output) for NaN/inf and recompute that call with "
        "DELTAINV_GUARD_METHOD; 0: no check (no extra reduction, no host sync).",
    ),
    Variable(
        "DELTAINV_GUARD_METHOD", "substitution", tuple(n for n, m in METHODS.items() if m.stable),
        "Stable method (in fp32) the guard recomputes a non-finite call with.",
    ),
    Variable(
        "DELTAINV_FORCE_TRITON", "1", _bool_choices(),
        "1: when active, make vLLM/SGLang pick their Triton GDN prefill path (the one deltainv patches) "
        "where they would auto-select FlashInfer/CuteDSL, run deltainv's vLLM GDN op whatever the prefill "
        "backend, and turn fla's FlashQLA auto-dispatch back to fla's Triton path; an explicit SGLang "
        "choice is kept and warned about. 0: change nothing, only warn when the patched path will not run.",
    ),
    Variable(
        "DELTAINV_ALLOW_INACCURATE", "0", _bool_choices(),
        "1: accept a recipe known not to reach fp32-level accuracy (e.g. newton_schulz with too few iterations) "
        "for accuracy studies and tests; it is logged as a warning. 0: such a recipe stops the engine at start.",
    ),
    Variable(
        "DELTAINV_LOG_LEVEL", "info", _LOG_LEVELS,
        "Level of the 'deltainv' logger (stderr, one line per event, prefixed with the process id).",
    ),
)

#: Name -> :class:`Variable`.
VARIABLE_BY_NAME: Mapping[str, Variable] = MappingProxyType({v.name: v for v in VARIABLES})


def _raw(env: Mapping[str, str], name: str) -> str:
    return env.get(name, VARIABLE_BY_NAME[name].default).strip()


def _choice(env: Mapping[str, str], name: str, lower: bool = True) -> str:
    var = VARIABLE_BY_NAME[name]
    value = _raw(env, name)
    value = value.lower() if lower else value
    if value == "":
        value = var.default
    if var.choices is not None and value not in var.choices:
        raise SettingsError(f"{name}={value!r} is not valid; choose one of: {', '.join(var.choices)}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    value = _raw(env, name).lower() or VARIABLE_BY_NAME[name].default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={value!r} is not valid; use 1 or 0 (also true/false, yes/no, on/off)")


def _options(env: Mapping[str, str], method: str | None) -> tuple[tuple[str, Any], ...]:
    """``key=value,...`` parsed and checked with the registry's option specs (type and range)."""
    text = _raw(env, "DELTAINV_OPTIONS")
    if not text:
        return ()
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingsError(f"DELTAINV_OPTIONS={text!r}: expected comma-separated key=value, got {item!r}")
        pairs[key] = value.strip()
    if method is None:
        return tuple(sorted(pairs.items()))
    spec = get_method(method)
    try:
        unknown = sorted(set(pairs) - set(spec.options))
        if unknown:
            spec.check_options(dict.fromkeys(unknown))  # raises TypeError naming them and the method's options
        values = {k: spec.options[k].parse(v) for k, v in pairs.items()}
        spec.check_options(values)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"DELTAINV_OPTIONS={text!r}: {exc}") from None
    return tuple(sorted(values.items()))


def _targets(env: Mapping[str, str]) -> frozenset[str]:
    text = _raw(env, "DELTAINV_TARGETS").lower()
    if text in ("", "all"):
        return frozenset(TARGET_GROUPS)
    names = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(names - set(TARGET_GROUPS))
    if unknown:
        raise SettingsError(
            f"DELTAINV_TARGETS={text!r}: unknown target group(s) {unknown}; choose from: "
            f"{', '.join(TARGET_GROUPS)} or all"
        )
    return frozenset(names)


@dataclass(frozen=True)
class Settings:
    """Parsed ``DELTAINV_*`` variables. ``method is None`` means deltainv is off.

    Build it with :meth:`from_env` (or directly, e.g. in tests); :meth:`replace`-style changes go
    through :func:`dataclasses.replace`, which re-runs validation.
    """

    method: str | None = None
    precision: str = DEFAULT_PRECISION
    options: tuple[tuple[str, Any], ...] = ()
    wu_precision: str = "auto"
    backend: str = "auto"
    targets: frozenset[str] = field(default_factory=lambda: frozenset(TARGET_GROUPS))
    strict: bool = False
    guard: bool = True
    guard_method: str = "substitution"
    force_triton: bool = True
    allow_inaccurate: bool = False
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.method is not None:
            spec = get_method(self.method)
            try:
                spec.check_precision(self.precision)
            except ValueError as exc:
                raise SettingsError(f"DELTAINV_PRECISION={self.precision!r}: {exc}") from None
            opts = ",".join(f"{k}={v}" for k, v in self.options)
            try:
                recipe = resolve(self.method, self.precision, **dict(self.options))
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"DELTAINV_OPTIONS={opts!r}: {exc}") from None
            # A valid recipe the library accepts for study (e.g. too few Newton-Schulz iterations)
            # must not reach an engine: it would answer wrongly, not fail. Unstable methods are
            # the guard's business (tests and studies deploy them on purpose).
            warning = recipe.accuracy_warning(ENGINE_CHUNK_SIZE) if recipe.method.stable else None
            if warning is not None and not self.allow_inaccurate:
                raise SettingsError(f"DELTAINV_OPTIONS={opts!r}: {warning}; the engines invert "
                                    f"{ENGINE_CHUNK_SIZE}x{ENGINE_CHUNK_SIZE} chunks")
        elif self.precision not in PRECISIONS:
            raise SettingsError(f"DELTAINV_PRECISION={self.precision!r} is not valid; choose one of: {', '.join(PRECISIONS)}")
        if self.wu_precision not in ("auto", *PRECISIONS):
            raise SettingsError(f"DELTAINV_WU_PRECISION={self.wu_precision!r} is not valid; choose one of: auto, "
                                f"{', '.join(PRECISIONS)}")
        if self.backend not in ("auto", *BACKENDS):
            raise SettingsError(f"DELTAINV_BACKEND={self.backend!r} is not valid; choose one of: auto, {', '.join(BACKENDS)}")
        for method in (self.method, self.guard_method):
            if method is not None and self.backend not in ("auto", *get_method(method).impls):
                have = [n for n, m in METHODS.items() if self.backend in m.impls]
                raise SettingsError(f"DELTAINV_BACKEND={self.backend}: method {method!r} has no {self.backend} "
                                    f"implementation (methods with one: {', '.join(have)})")
        if not get_method(self.guard_method).stable:
            raise SettingsError(f"DELTAINV_GUARD_METHOD={self.guard_method!r} is not a stable method")
        unknown = sorted(set(self.targets) - set(TARGET_GROUPS))
        if unknown:
            raise SettingsError(f"DELTAINV_TARGETS: unknown target group(s) {unknown}")
        if self.log_level not in _LOG_LEVELS:
            raise SettingsError(f"DELTAINV_LOG_LEVEL={self.log_level!r} is not valid; choose one of: {', '.join(_LOG_LEVELS)}")

    def inaccuracy(self) -> str | None:
        """Why the (stable) recipe is known not to reach fp32-level accuracy at the engines' chunk size."""
        if self.method is None or not get_method(self.method).stable:
            return None
        return resolve(self.method, self.precision, **dict(self.options)).accuracy_warning(ENGINE_CHUNK_SIZE)

    @property
    def active(self) -> bool:
        return self.method is not None

    @property
    def method_options(self) -> dict[str, Any]:
        return dict(self.options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse the variables of :data:`VARIABLES` from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        method = _choice(env, "DELTAINV_METHOD", lower=False)
        method = None if method.lower() == "off" else method
        return cls(
            method=method,
            precision=(_choice(env, "DELTAINV_PRECISION") if env.get("DELTAINV_PRECISION", "").strip() or method is None
                       else resolve(method).precision),  # unset: the default, or the method's own (torch: fp32)
            options=_options(env, method),
            wu_precision=_choice(env, "DELTAINV_WU_PRECISION"),
            backend=_choice(env, "DELTAINV_BACKEND"),
            targets=_targets(env),
            strict=_bool(env, "DELTAINV_STRICT"),
            guard=_bool(env, "DELTAINV_GUARD"),
            guard_method=_choice(env, "DELTAINV_GUARD_METHOD"),
            force_triton=_bool(env, "DELTAINV_FORCE_TRITON"),
            allow_inaccurate=_bool(env, "DELTAINV_ALLOW_INACCURATE"),
            log_level=_choice(env, "DELTAINV_LOG_LEVEL"),
        )

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings (e.g. for a child process)."""
        return {
            "DELTAINV_METHOD": self.method or "off",
            "DELTAINV_PRECISION": self.precision,
            "DELTAINV_OPTIONS": ",".join(f"{k}={v}" for k, v in self.options),
            "DELTAINV_WU_PRECISION": self.wu_precision,
            "DELTAINV_BACKEND": self.backend,
            "DELTAINV_TARGETS": ",".join(t for t in TARGET_GROUPS if t in self.targets),
            "DELTAINV_STRICT": "1" if self.strict else "0",
            "DELTAINV_GUARD": "1" if self.guard else "0",
            "DELTAINV_GUARD_METHOD": self.guard_method,
            "DELTAINV_FORCE_TRITON": "1" if self.force_triton else "0",
            "DELTAINV_ALLOW_INACCURATE": "1" if self.allow_inaccurate else "0",
            "DELTAINV_LOG_LEVEL": self.log_level,
        }

    def describe(self) -> str:
        """``method=... precision=...`` plus options, for log lines."""
        if not self.active:
            return "off"
        opts = "".join(f" {k}={v}" for k, v in self.options)
        wu = "" if self.wu_precision == "auto" else f" wu_precision={self.wu_precision}"
        return f"method={self.method} precision={self.precision}{opts}{wu}"


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``DELTAINV_*`` names in ``environ`` that nothing reads (typos such as ``DELTAINV_METOD``)."""
    env = os.environ if environ is None else environ
    return sorted(k for k in env if k.startswith("DELTAINV_") and k not in VARIABLE_BY_NAME
                  and k not in OTHER_VARIABLES)


def variables_markdown() -> str:
    """The table as Markdown (``docs/plugin.md`` holds this verbatim; a test keeps them in sync)."""
    rows = ["| variable | default | values | effect |", "|---|---|---|---|"]
    for v in VARIABLES:
        values = " \\| ".join(f"`{c}`" for c in v.choices) if v.choices else "see effect"
        if v.name == "DELTAINV_METHOD":
            values = "`off` or a method name (`deltainv.kernels.METHODS`)"
        elif v.name == "DELTAINV_PRECISION":
            values = "`deltainv.kernels.PRECISIONS`: " + ", ".join(f"`{p}`" for p in PRECISIONS)
        default = f"`{v.default}`" if v.default else "(empty)"
        rows.append(f"| `{v.name}` | {default} | {values} | {v.help} |")
    return "\n".join(rows)


__all__ = [
    "Settings",
    "SettingsError",
    "TARGET_GROUPS",
    "VARIABLES",
    "VARIABLE_BY_NAME",
    "OTHER_VARIABLES",
    "unknown_variables",
    "Variable",
    "variables_markdown",
]
