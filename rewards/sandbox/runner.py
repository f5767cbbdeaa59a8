"""Run the code and export its figure; the last step of a render process, after every layer is applied.

``plt.show``, ``plt.pause`` and ``plt.close`` are no-ops (nothing may block, and the figure must still
exist to be exported), and so are ``plt.savefig`` / ``Figure.savefig`` while the code runs (a save to
``/results/chart.pdf`` must not fail the render); the backend is Agg. The figure exported is the current one when the code ends.
The result is one frame on the result pipe: ``{"ok", "reason", "detail", "elements", "layers"}`` plus the
PNG as payload.
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

from rewards.sandbox import frames
from rewards.sandbox.config import SandboxConfig
from rewards.sandbox.export import export_figure


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _error_line(e: BaseException) -> str:
    try:
        msg = str(e)
    except Exception:  # noqa: BLE001 - a hostile __str__
        msg = "<unprintable>"
    return f"{type(e).__name__}: {msg}".splitlines()[0][:300] if msg else type(e).__name__


def execute(code: bytearray, cfg: SandboxConfig, res_fd: int, layers: list[str]) -> None:
    """Compile and run ``code``; write one result frame to ``res_fd``."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    plt.close("all")
    real_savefig = Figure.savefig
    plt.show = _noop
    plt.pause = _noop
    plt.close = _noop
    plt.savefig = _noop  # the code's own saves (to any path or format) are skipped: we save below
    Figure.savefig = _noop
    header: dict[str, Any] = {"ok": False, "layers": layers}
    png = b""
    try:
        source = bytes(code).decode("utf-8", errors="replace")
        compiled = compile(source, "<completion>", "exec")
    except (SyntaxError, ValueError) as e:
        header.update(reason="syntax", detail=_error_line(e))
        frames.write_frame(res_fd, header)
        return
    failed = False
    try:
        exec(compiled, {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit:
        pass
    except MemoryError as e:
        header.update(reason="memory", detail=_error_line(e))
        failed = True
    except BaseException as e:  # noqa: BLE001 - the code's own failure is the result
        header.update(reason="error", detail=_error_line(e))
        failed = True
    if not failed:
        try:
            fignums = plt.get_fignums()
            if not fignums:
                header.update(reason="no_figure", detail="the code left no matplotlib figure")
            else:
                Figure.savefig = real_savefig
                png, elements = export_figure(plt.gcf(), cfg.width_px, cfg.height_px, cfg.dpi)
                header.update(ok=True, reason="", elements=elements)
        except MemoryError as e:
            header.update(reason="memory", detail=_error_line(e))
        except BaseException as e:  # noqa: BLE001 - a figure the code broke on purpose
            header.update(reason="error", detail="export failed: " + _error_line(e))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the code may have replaced or closed the streams
            pass
    frames.write_frame(res_fd, header, png)
