"""The demo page in a real browser: Playwright drives Debian's Chromium (never a browser of its own),
headless, sandbox off, background networking off, a fresh profile. Upload an image, run, see the drawn
answer and the reward; a bad input shows its message and the page keeps working; the Rollouts tab shows a
run made by the test. Screenshots are saved under the test's tmp dir and their paths printed."""

import json
from pathlib import Path

import pytest
from demo_helpers import SQUARE, SQUARE_MODEL

pytestmark = pytest.mark.browser
pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (pip)")
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(
        "the browser test needs Debian's chromium: apt-get install -y chromium", allow_module_level=True
    )

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
WAIT_MS = 120_000  # generous: the suite shares two cores with other work


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium_profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport={"width": 1400, "height": 1000},
        )  # fmt: skip
        context.set_default_timeout(WAIT_MS)
        yield context.new_page()
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("demo_screenshots")


def _shot(page, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def _fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)


def test_upload_run_and_see_the_drawn_answer_and_its_reward(page, demo_server, square_png, shots):
    page.goto(demo_server)
    page.locator("#run").wait_for()
    page.locator("#media input[type=file]").set_input_files(str(square_png))
    page.get_by_text("square.png").first.wait_for()
    _fill(page, "target", "the red square")
    page.get_by_label("Task template").click()
    page.get_by_role("option", name="ground", exact=True).click()
    page.wait_for_function("document.querySelector('#prompt textarea').value.includes('the red square')")
    _fill(page, "truth", json.dumps(SQUARE))
    page.locator("#run").click()
    page.locator("#tuned-answer").get_by_text("reward").first.wait_for()
    assert "iou" in page.locator("#tuned-answer").inner_text()
    page.locator("#tuned-picture img").wait_for()
    assert page.locator("#try-status").inner_text().startswith("image 150x100 px")
    _shot(page, shots, "try_generated")

    page.get_by_text("Read and score a completion written elsewhere").click()
    _fill(page, "completion", '<answer>{"bbox_2d": ' + json.dumps(SQUARE_MODEL) + "}</answer>")
    page.locator("#score").click()
    page.locator("#tuned-answer").get_by_text("iou 1.000").wait_for()
    assert "1 box(es) [30, 20, 90, 80]" in page.locator("#tuned-answer").inner_text()
    size = page.locator("#tuned-picture img").evaluate("im => [im.naturalWidth, im.naturalHeight]")
    assert size == [150, 100]  # the answer is drawn on the original image
    _shot(page, shots, "try_scored")


def test_a_bad_input_shows_its_message_and_the_page_keeps_working(page, demo_server, shots):
    _fill(page, "prompt", "")
    page.locator("#run").click()
    page.locator("#try-status").get_by_text("the prompt is empty").wait_for()
    _shot(page, shots, "try_empty_prompt")
    _fill(page, "prompt", "Find the red square.")
    page.locator("#run").click()
    page.locator("#try-status").get_by_text("image 150x100 px").wait_for()


def test_rollouts_tab_shows_the_run(page, demo_server, demo_run, shots):
    page.get_by_role("tab", name="Rollouts").click()
    assert page.locator("#rollouts-dir textarea, #rollouts-dir input").first.input_value() == str(demo_run)
    page.locator("#rollouts-show").click()
    page.locator("#rollouts-status").get_by_text("completions in the reward range").wait_for()
    page.locator("#rollouts-table table").first.wait_for()
    assert page.locator("#rollouts-table table").count() == 2  # two prompts logged at the last step
    page.locator(".gallery-item img, button.thumbnail-item img, .grid-wrap img").first.wait_for()
    _shot(page, shots, "rollouts")
    page.get_by_role("tab", name="Curves").click()
    page.locator("#curves-status").get_by_text("logged rows").wait_for()
    _shot(page, shots, "curves")


def test_a_bundled_example_fills_the_inputs_and_its_answer_is_drawn_with_confidences(
    page, demo_server, shots
):
    page.get_by_role("tab", name="Try").click()
    page.get_by_text("shapes_detection.png").first.click()
    page.wait_for_function(
        "document.querySelector('#prompt textarea').value.startsWith('Detect every triangle')"
    )
    # two of the three triangles found (model frame: 252 px for the 250 px image), one false alarm
    found = [{"bbox_2d": [104, 32, 142, 71], "label": "triangle", "score": 0.91},
             {"bbox_2d": [77, 136, 137, 197], "label": "triangle", "score": 0.74},
             {"bbox_2d": [150, 150, 200, 200], "label": "triangle", "score": 0.35}]  # fmt: skip
    _fill(page, "completion", "<answer>" + json.dumps(found) + "</answer>")
    page.locator("#score").click()
    page.locator("#tuned-answer").get_by_text("detection").first.wait_for()
    assert "3 box(es)" in page.locator("#tuned-answer").inner_text()
    assert page.locator("#tuned-picture img").evaluate("im => im.naturalWidth") == 250
    _shot(page, shots, "try_example_detection")
