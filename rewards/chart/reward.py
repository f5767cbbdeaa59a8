"""``chart_render``: run a completion's plotting code in the sandbox and compare its chart to the reference.

Score = (element_weight * element score + visual_weight * visual score) / (element_weight + visual_weight),
in [0, 1] (see :mod:`rewards.chart.scoring`). Code that is missing, fails, times out or leaves no figure
scores 0 and is counted as ``fail/<reason>`` in the returned ``Scores.metrics``.

- The code: the answer (``<answer>`` tag rule of :mod:`rewards.parsing`), then, with ``code_block`` "auto"
  (default), the first fenced python block if any (else the first fence, else the whole answer);
  "fence" requires a fence; "whole" runs the whole answer.
- The reference, from ``solution``: ``{"code": str}`` (rendered once in the same sandbox and cached by
  the hash of code and render settings), or ``{"image": path}`` with optional ``"elements"`` (a dict as
  exported by the sandbox, or a path to its JSON). With an image but no elements, only the visual score
  counts. A row with no reference, or whose task is not a chart task, gets None.
- Renders run on a warm pool shared by every call with the same sandbox settings (one per process).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from concurrent import futures
from typing import Annotated, Any, Literal, NamedTuple, get_args

from rewards.columns import column, completion_text, solutions
from rewards.params import Range, check_arguments
from rewards.parsing import extract_answer
from rewards.registry import register_reward
from rewards.result import MetricCounter, Scores
from rewards.sandbox import FAIL_REASONS, RenderResult, SandboxConfig, SandboxPool

CHART_TASKS = ("chart_to_code", "chart", "chart_render")
CodeBlock = Literal["auto", "fence", "whole"]
CODE_BLOCK_MODES = get_args(CodeBlock)
Weight = Annotated[float, Range(0)]
Positive = Annotated[float, Range(0, lo_open=True)]
Count = Annotated[int, Range(1)]
_SB = SandboxConfig  # its class attributes are the field defaults
_LANG = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)")
_CACHE_SIZE = 4096

_pools: dict[SandboxConfig, SandboxPool] = {}
_pools_lock = threading.Lock()
_cache: OrderedDict[str, Reference | None] = OrderedDict()
_cache_lock = threading.Lock()


class Reference(NamedTuple):
    """A rendered reference: RGB [H, W, 3] at the sandbox's render size and its elements (or None)."""

    rgb: Any  # np.ndarray; numpy, scipy and PIL load on first use so that importing the registry stays fast
    elements: dict[str, Any] | None


def extract_code(completion: Any, code_block: str = "auto") -> str | None:
    """The code to run from one completion (string or TRL message list); None when there is none."""
    answer = extract_answer(completion_text(completion))
    if not answer.ok:
        return None
    text = answer.text
    if code_block == "whole":
        return text
    fences = code_fences(text)
    python = [body for lang, body in fences if lang.lower() in ("python", "py", "python3")]
    if python or fences:
        body = (python or [b for _, b in fences])[0].strip()
        return body or None
    return None if code_block == "fence" else text


def code_fences(text: str) -> list[tuple[str, str]]:
    """Every Markdown code fence in ``text`` as ``(language, body)``, in order, in one linear scan.

    A fence opens with a backtick triple and the rest of its line (the language is the first word
    after it), and closes at the next backtick triple after that line, mid-line or not; an unclosed
    fence is not a fence. (The regex that says the same, backtick triple, ``[ \t]*([A-Za-z0-9_+-]*)``,
    ``[^\n]*\n(.*?)`` and a triple, backtracks quadratically on lines of unclosed triples.)
    """
    out: list[tuple[str, str]] = []
    pos = 0
    while True:
        start = text.find("```", pos)
        if start < 0:
            return out
        eol = text.find("\n", start + 3)
        close = text.find("```", eol + 1) if eol >= 0 else -1
        if close < 0:  # no later triple can open a closed fence either
            return out
        lang = _LANG.match(text, start + 3, eol).group(1)
        out.append((lang, text[eol + 1 : close]))
        pos = close + 3


def get_pool(cfg: SandboxConfig) -> SandboxPool:
    """The process-wide warm pool for ``cfg`` (started on first use, closed at exit)."""
    with _pools_lock:
        pool = _pools.get(cfg)
        if pool is None:
            pool = _pools[cfg] = SandboxPool(cfg)
        return pool


@atexit.register
def shutdown_pools() -> None:
    """Close every pool this process started."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def _cache_key(code: str, cfg: SandboxConfig) -> str:
    raw = json.dumps([code, cfg.width_px, cfg.height_px, cfg.dpi]).encode()
    return hashlib.sha256(raw).hexdigest()


def _reference_from_render(r: RenderResult, cfg: SandboxConfig) -> Reference | None:
    from rewards.chart.scoring import load_rgb

    if not r.ok:
        return None
    return Reference(load_rgb(r.png, (cfg.width_px, cfg.height_px)), r.elements)


def _reference_from_image(sol: dict[str, Any], cfg: SandboxConfig) -> Reference | None:
    from rewards.chart.scoring import load_rgb

    try:
        rgb = load_rgb(str(sol["image"]), (cfg.width_px, cfg.height_px))
    except (ValueError, OSError):
        return None
    elements = sol.get("elements")
    if isinstance(elements, str):
        try:
            with open(elements) as f:
                elements = json.load(f)
        except (OSError, ValueError):
            elements = None
    return Reference(rgb, elements if isinstance(elements, dict) else None)


def _cached_image_reference(sol: dict[str, Any], cfg: SandboxConfig) -> Reference | None:
    """An image reference, decoded once per (path, modification time, elements, render size)."""
    try:
        mtime = os.stat(str(sol["image"])).st_mtime_ns
    except OSError:
        mtime = -1
    key = (
        "img:"
        + hashlib.sha256(
            json.dumps(
                [str(sol["image"]), mtime, sol.get("elements"), cfg.width_px, cfg.height_px], default=str
            ).encode()
        ).hexdigest()
    )
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    ref = _reference_from_image(sol, cfg)
    with _cache_lock:
        _cache[key] = ref
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return ref


def _check_params(values: dict[str, Any]) -> None:
    """The constraints between chart_render's parameters (``check_params`` hook of rewards.params)."""
    if values["element_weight"] + values["visual_weight"] <= 0:
        raise ValueError("element_weight + visual_weight must be > 0")
    sandbox_config({k: v for k, v in values.items() if v is not None})  # SandboxConfig's own checks


def sandbox_config(params: dict[str, Any]) -> SandboxConfig:
    """The sandbox settings named in the reward's params (unknown keys are ignored here)."""
    fields = SandboxConfig.__dataclass_fields__
    # dataset columns arrive as lists (one value per completion); settings are scalars
    kw = {
        k: v for k, v in params.items() if k in fields and (k == "extra_ro_paths" or not isinstance(v, list))
    }
    if "timeout_s" in kw and "cpu_s" not in kw:
        kw["cpu_s"] = max(1, int(float(kw["timeout_s"]) + 0.999))
    if "extra_ro_paths" in kw:
        kw["extra_ro_paths"] = tuple(kw["extra_ro_paths"])
    return SandboxConfig(**kw)


@register_reward("chart_render")
def chart_render(
    completions: list[Any],
    solution: list[Any] | None = None,
    task: list[Any] | None = None,
    element_weight: Weight = 0.5,
    visual_weight: Weight = 0.5,
    text_weight: Weight = 1.0,
    type_weight: Weight = 1.0,
    color_weight: Weight = 1.0,
    layout_weight: Weight = 1.0,
    color_scale: Positive = 100.0,
    code_block: CodeBlock = "auto",
    batch_timeout_s: Positive | None = None,
    timeout_s: Positive = _SB.timeout_s,
    cpu_s: Count | None = None,
    memory_mb: Count = _SB.memory_mb,
    max_open_files: Count = _SB.max_open_files,
    max_file_mb: Count = _SB.max_file_mb,
    max_procs: Count = _SB.max_procs,
    max_output_bytes: Count = _SB.max_output_bytes,
    max_result_bytes: Count = _SB.max_result_bytes,
    width_px: Count = _SB.width_px,
    height_px: Count = _SB.height_px,
    dpi: Count = _SB.dpi,
    workers: Count = _SB.workers,
    isolation: Literal["auto", "strict", "minimal"] = _SB.isolation,
    namespaces: bool = _SB.namespaces,
    seccomp: bool = _SB.seccomp,
    landlock: bool = _SB.landlock,
    drop_user: bool = _SB.drop_user,
    uid_base: Count = _SB.uid_base,
    extra_ro_paths: list[str] | tuple[str, ...] = (),
    **columns: Any,
) -> Scores:
    """Score each completion's chart against its reference (see the module doc); never raises on output.

    The parameters from ``timeout_s`` on are the :class:`~rewards.sandbox.SandboxConfig` fields
    (``cpu_s`` defaults to ``ceil(timeout_s)``). Without ``batch_timeout_s`` the call waits at most
    about ceil(renders / workers) x (timeout_s + 3 s); with it, renders unfinished after
    ``batch_timeout_s`` seconds score 0 as ``fail/deadline`` (queued ones are cancelled) and the call
    returns.
    """
    args = locals()
    check_arguments(chart_render, args)
    cfg = sandbox_config({k: v for k, v in args.items() if v is not None})
    from rewards.chart.scoring import element_score, load_rgb, visual_score

    n = len(completions)
    sols = solutions({"solution": solution}, n)
    tasks = column({"task": task}, "task", n)
    counter = MetricCounter(*(f"fail/{r}" for r in FAIL_REASONS), "fail/reference")
    weights = {"text": text_weight, "type": type_weight, "color": color_weight, "layout": layout_weight}

    # Which rows apply, their code, and which reference codes still need a render.
    refs: dict[int, str | Reference | None] = {}
    codes: dict[int, str] = {}
    to_render: dict[str, str] = {}
    for i, sol in enumerate(sols):
        if tasks[i] is not None and str(tasks[i]) not in CHART_TASKS:
            continue
        if isinstance(sol.get("code"), str) and sol["code"].strip():
            key = _cache_key(sol["code"], cfg)
            with _cache_lock:
                hit = key in _cache
            if not hit:
                to_render[key] = sol["code"]
            refs[i] = key
        elif sol.get("image"):
            refs[i] = _cached_image_reference(sol, cfg)
        else:
            continue
        code = extract_code(completions[i], code_block)
        if code is None:
            counter.add("fail/no_code")
        else:
            codes[i] = code

    pool = get_pool(cfg) if (to_render or codes) else None
    ref_futures = {key: pool.submit(code) for key, code in to_render.items()} if pool else {}
    cand_futures = {i: pool.submit(code) for i, code in codes.items()} if pool else {}
    pending = list(ref_futures.values()) + list(cand_futures.values())
    _, late = futures.wait(pending, timeout=batch_timeout_s)
    for fut in late:
        fut.cancel()
    for key, fut in ref_futures.items():
        if fut in late:
            continue
        ref = _reference_from_render(fut.result(), cfg)
        with _cache_lock:
            _cache[key] = ref
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)

    scores: list[float | None] = [None] * n
    key_of: dict[int, str] = {}
    element_sum = visual_sum = render_s = 0.0
    n_ok = 0
    for i, ref in refs.items():
        if isinstance(ref, str):
            key_of[i] = ref
            with _cache_lock:
                ref = _cache.get(ref)
            if ref is None and ref_futures.get(key_of[i]) in late:
                counter.add("fail/deadline")  # the reference itself did not finish in time: no score
                continue
        if ref is None:
            counter.add("fail/reference")
            continue
        if i not in cand_futures:
            scores[i] = 0.0
            continue
        if cand_futures[i] in late:
            counter.add("fail/deadline")
            scores[i] = 0.0
            continue
        r = cand_futures[i].result()
        render_s += r.wall_s
        if not r.ok:
            counter.add(f"fail/{r.reason}")
            scores[i] = 0.0
            continue
        try:
            rgb = load_rgb(r.png, (cfg.width_px, cfg.height_px))
        except ValueError:
            counter.add("fail/crash")
            scores[i] = 0.0
            continue
        vis = visual_score(ref.rgb, rgb)
        if ref.elements is None:
            scores[i] = vis
            elem = vis
        else:
            elem = element_score(ref.elements, r.elements, weights, color_scale).total
            scores[i] = (element_weight * elem + visual_weight * vis) / (element_weight + visual_weight)
        element_sum += elem
        visual_sum += vis
        n_ok += 1
    out = counter.scores(scores)
    out.metrics["rendered"] = float(n_ok)
    if n_ok:
        out.metrics["element_mean"] = element_sum / n_ok
        out.metrics["visual_mean"] = visual_sum / n_ok
    if n_done := len(cand_futures) - sum(f in late for f in cand_futures.values()):
        out.metrics["render_s_mean"] = render_s / n_done
    return out


chart_render.check_params = _check_params  # type: ignore[attr-defined]
