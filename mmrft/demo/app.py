"""The Gradio app: tabs Try, Rollouts and Curves, and the named API endpoints scripts call.

Endpoints (``gradio_client.Client(url).predict(..., api_name=NAME)``; docs/demo.md lists their
arguments and outputs): ``/predict`` (the models answer an input), ``/score`` (read and score a
completion written elsewhere), ``/template`` (a task template's prompt), ``/rollouts`` and ``/curves``
(a run directory's logs). Every handler returns a status line instead of raising.
"""

from __future__ import annotations

from pathlib import Path

from data_pipelines.prompts import PROMPT_STYLES
from mmrft.demo import browse, views
from mmrft.demo.examples import ASSETS, load_examples
from mmrft.demo.handlers import Demo, TryResult
from mmrft.demo.inputs import DEFAULT_TARGETS, TEMPLATES

MAX_UPLOAD = "200mb"  # gradio refuses larger uploads itself, with a message in the page
REFRESH_S = 5.0  # the Curves tab's refresh period while "refresh while training" is ticked


def _outputs(demo: Demo, result: TryResult) -> tuple:
    """(status, tuned picture, tuned card, base picture, base card, JSON) for the Try outputs."""
    cards = []
    for k in range(2):
        ans = result.answers[k] if k < len(result.answers) else None
        cards += [ans.picture if ans else None, views.answer_markdown(ans) if ans else ""]
    return (views.status_markdown(result), *cards, result.to_json())


class RunBrowser:
    """The Rollouts/Curves handlers; a run's records are found once and kept until its config changes."""

    def __init__(self):
        self._records: dict[tuple[str, float], browse.RunRecords] = {}

    def records(self, run_dir) -> browse.RunRecords | None:
        d = Path(str(run_dir or "").strip()).expanduser()
        cfg = d / "config.yaml"
        if not cfg.is_file():
            return None
        key = (str(d.resolve()), cfg.stat().st_mtime)
        if key not in self._records:
            self._records = {key: browse.RunRecords(d)}
        return self._records[key]

    def rollouts(self, run_dir, step, min_reward, max_reward):
        import gradio as gr

        view = browse.rollouts_view(run_dir, step, min_reward, max_reward, self.records(run_dir))
        if view.error:
            return (
                f"**Error:** {view.error}",
                gr.update(choices=[], value=None),
                [],
                "",
                {"error": view.error},
            )
        steps = gr.update(choices=view.steps, value=view.step)
        return view.summary, steps, view.pictures, view.markdown, view.data

    @staticmethod
    def curves(run_dir):
        view = browse.curves_view(run_dir)
        if view.error:
            return f"**Error:** {view.error}", None, {"error": view.error}
        return view.markdown, view.figure, view.latest


def build_app(demo: Demo, run_dir: str | None = None, examples_dir: Path = ASSETS):
    """The gr.Blocks app (not launched)."""
    import gradio as gr

    names = " · ".join(f"{m.name}: `{m.path}`" for m in demo.models)
    has_base = len(demo.models) > 1
    browser = RunBrowser()
    first_task = "detection"
    # uploads and pictures in gradio's cache are deleted an hour after they were made
    with gr.Blocks(title="mmrft demo", analytics_enabled=False, delete_cache=(1800, 3600)) as app:
        gr.Markdown(f"## mmrft demo\n{names} · vision and rewards settings: {demo.settings.source}")
        with gr.Tab("Try", id="try"):
            with gr.Row():
                with gr.Column(scale=2):
                    media = gr.File(label="Image or video", type="filepath", elem_id="media")
                    task = gr.Dropdown([(label, t) for t, (label, _) in TEMPLATES.items()], value=first_task,
                                       label="Task template", elem_id="task")  # fmt: skip
                    target = gr.Textbox(label="Target (what the template asks about)", elem_id="target",
                                        placeholder=DEFAULT_TARGETS[first_task])  # fmt: skip
                    style = gr.Radio(list(PROMPT_STYLES), value="answer_only", label="Prompt style")
                    prompt = gr.Textbox(demo.template(first_task, "", "answer_only"), lines=4, label="Prompt",
                                        elem_id="prompt")  # fmt: skip
                    truth = gr.Textbox(label="Ground truth (optional; original pixels or seconds)", lines=2,
                                       elem_id="truth", placeholder='[x1, y1, x2, y2], a count, "2 to 5", a label')  # fmt: skip
                    with gr.Accordion("Sampling", open=False):
                        greedy = gr.Checkbox(True, label="Greedy")
                        temperature = gr.Slider(0.05, 2.0, 1.0, step=0.05, label="Temperature")
                        max_new = gr.Slider(1, 1024, 128, step=1, label="Max new tokens")
                        n_samples = gr.Slider(1, 16, 1, step=1, label="Number of samples")
                        seed = gr.Number(0, precision=0, label="Seed")
                    run = gr.Button("Run", variant="primary", elem_id="run")
                    with gr.Accordion("Read and score a completion written elsewhere", open=False):
                        completion = gr.Textbox(
                            lines=3, label="Completion (in the model's frame)", elem_id="completion"
                        )
                        score = gr.Button("Read and score", elem_id="score")
                with gr.Column(scale=3):
                    status = gr.Markdown(elem_id="try-status", label="Status")
                    with gr.Row():
                        with gr.Column():
                            tuned_pic = gr.Image(
                                type="pil",
                                format="png",
                                label=demo.models[0].name,
                                elem_id="tuned-picture",
                                height=380,
                            )
                            tuned_md = gr.Markdown(elem_id="tuned-answer", label="tuned answers")
                        with gr.Column(visible=has_base):
                            base_pic = gr.Image(
                                type="pil", format="png", label="base", elem_id="base-picture", height=380
                            )
                            base_md = gr.Markdown(elem_id="base-answer", label="base answers")
                    with gr.Accordion("Result (JSON, as the API returns it)", open=False):
                        result_json = gr.JSON(label="Result (JSON)")
            examples = load_examples(examples_dir)
            if examples:
                gr.Examples([[str(examples_dir / e.file), e.task, e.target, e.truth] for e in examples],
                            [media, task, target, truth], label="Bundled examples (assets/demo)")  # fmt: skip
            outs = [status, tuned_pic, tuned_md, base_pic, base_md, result_json]
            gr.on([task.change, target.change, style.change], demo.template, [task, target, style], prompt,
                  api_name="template")  # fmt: skip

            def predict(media, task, target, prompt, prompt_style, truth, greedy, temperature, max_new_tokens,
                        n_samples, seed):  # fmt: skip
                return _outputs(demo, demo.run(media, task, target, prompt, prompt_style, truth, greedy,
                                               temperature, max_new_tokens, n_samples, seed))  # fmt: skip

            def score_completion(media, task, target, prompt, prompt_style, truth, completion):
                return _outputs(
                    demo, demo.score(media, task, target, prompt, prompt_style, truth, completion)
                )

            inputs = [media, task, target, prompt, style, truth]
            run.click(predict, [*inputs, greedy, temperature, max_new, n_samples, seed], outs, api_name="predict",
                      concurrency_limit=1)  # fmt: skip
            score.click(score_completion, [*inputs, completion], outs, api_name="score")
        with gr.Tab("Rollouts", id="rollouts"):
            with gr.Row():
                r_dir = gr.Textbox(run_dir or "", label="Run directory", elem_id="rollouts-dir", scale=3)
                r_step = gr.Dropdown([], label="Step", allow_custom_value=True, elem_id="rollouts-step")
                r_min = gr.Textbox(label="Min reward", placeholder="any", elem_id="rollouts-min")
                r_max = gr.Textbox(label="Max reward", placeholder="any", elem_id="rollouts-max")
            r_show = gr.Button("Show", variant="primary", elem_id="rollouts-show")
            r_status = gr.Markdown(elem_id="rollouts-status", label="Status")
            r_pics = gr.Gallery(
                label="Answers drawn (original frame; truth in green)",
                columns=4,
                height=360,
                format="png",
                object_fit="contain",
            )
            r_md = gr.Markdown(elem_id="rollouts-table", label="Completions")
            r_json = gr.JSON(label="Rollouts (JSON)", visible=False)
            r_outs = [r_status, r_step, r_pics, r_md, r_json]
            r_show.click(browser.rollouts, [r_dir, r_step, r_min, r_max], r_outs, api_name="rollouts")
        with gr.Tab("Curves", id="curves"):
            with gr.Row():
                c_dir = gr.Textbox(run_dir or "", label="Run directory", elem_id="curves-dir", scale=3)
                c_auto = gr.Checkbox(bool(run_dir), label=f"Refresh every {REFRESH_S:g} s while training")
            c_show = gr.Button("Refresh", elem_id="curves-refresh")
            c_status = gr.Markdown(elem_id="curves-status", label="Status")
            c_plot = gr.Plot(label="metrics.jsonl")
            with gr.Accordion("Latest values", open=False):
                c_json = gr.JSON(label="Latest values")
            timer = gr.Timer(REFRESH_S, active=bool(run_dir))
            c_outs = [c_status, c_plot, c_json]
            c_show.click(browser.curves, [c_dir], c_outs, api_name="curves")
            timer.tick(browser.curves, [c_dir], c_outs, api_visibility="private", show_progress="hidden")
            c_auto.change(lambda on: gr.Timer(active=on), c_auto, timer, api_visibility="private")
        if run_dir:
            app.load(browser.rollouts, [r_dir, r_step, r_min, r_max], r_outs, api_visibility="private")
            app.load(browser.curves, [c_dir], c_outs, api_visibility="private")
    return app


def launch(
    app, host: str = "127.0.0.1", port: int | None = None, share: bool = False, block: bool = True,
    examples_dir: Path = ASSETS,
) -> str:  # fmt: skip
    """Serve ``app`` on ``host:port`` (port None: gradio's first free port from 7860); returns its URL."""
    app.queue(default_concurrency_limit=4)
    _, url, share_url = app.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True, ssr_mode=False,
        max_file_size=MAX_UPLOAD, allowed_paths=[str(examples_dir)], footer_links=["api"],
    )  # fmt: skip
    print(f"mmrft demo: serving on {url}" + (f" and {share_url}" if share_url else ""), flush=True)
    if block:
        app.block_thread()
    return url
