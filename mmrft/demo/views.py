"""The Try tab's text: a status line for a request, and one markdown card per model's answers."""

from __future__ import annotations

from mmrft.demo.handlers import Answer, TryResult, short_answer


def _fence(text: str) -> str:
    """``text`` in a fenced block that nothing inside it can close."""
    return "```text\n" + (text.replace("```", "`\u200b``") or "(empty)") + "\n```"


def status_markdown(result: TryResult) -> str:
    """One line: the error (``**Error:** ...``), or what the model saw."""
    if result.error:
        return f"**Error:** {result.error}"
    info = result.info
    size = "x".join(map(str, info.get("original_size", [])))
    seen = "x".join(map(str, info.get("model_size", [])))
    line = (
        f"{info.get('kind', 'input')} {size} px, seen by the model at {seen} px ({info.get('coord_space')})"
    )
    if "frames" in info:
        line += f", {info['frames']} frames sampled of {info['duration_s']} s"
    errors = [f"{a.model}: {a.error}" for a in result.answers if a.error]
    if errors:
        line += "\n\n**Error:** " + "; ".join(errors)
    return line


def answer_markdown(answer: Answer) -> str:
    """A model's completions, what was read from each, and the rewards when they were scored."""
    if answer.error:
        return f"**Error:** {answer.model}: {answer.error}"
    parts = []
    for k, (text, pred) in enumerate(zip(answer.completions, answer.predictions)):
        head = f"**#{k + 1}**"
        if answer.tokens is not None:
            head += f" · {answer.tokens[k]} tokens"
        if answer.total:
            total = answer.total[k]
            scores = ", ".join(f"{n} {v:.3f}" for n, v in answer.rewards[k].items() if v is not None)
            head += f" · reward **{'-' if total is None else f'{total:.3f}'}**" + (
                f" ({scores})" if scores else ""
            )
        if answer.renders and k < len(answer.renders) and answer.renders[k]:
            head += f" · render failed: {answer.renders[k]}"
        parts.append(f"{head}\n\nread: {short_answer(pred)}\n\n{_fence(text)}")
    if answer.seconds is not None:
        parts.append(f"*{len(answer.completions)} completion(s) in {answer.seconds:.2f} s*")
    return "\n\n".join(parts)
