"""Evaluation in the papers' metrics, with the same parsers as training, every record counted.

- :func:`parse_prediction` (:mod:`.answers`): one completion of one Sample -> the parsed answer in the
  ORIGINAL image's frame, by the rewards' own parsers (the demo uses it too).
- :func:`evaluate` / :func:`evaluate_predictions` (:mod:`.runner`): generate (or read) completions for
  every record, batched over ranks, score them, gather, and compute the metrics (:mod:`.metrics`,
  :mod:`.coco`) into an :class:`EvalReport` (:mod:`.report`: eval.json, predictions.jsonl, eval.md).

The trainer calls :func:`evaluate` before GRPO, every ``train.eval_every`` steps and at the end.
See docs/eval.md for every metric and its conventions.
"""

from mmrft.evaluation.answers import ParseOptions, PredBox, Prediction, parse_prediction
from mmrft.evaluation.generation import Decoding
from mmrft.evaluation.records import RecordResult, Scorer
from mmrft.evaluation.report import EvalReport, compare, load_eval, read_predictions
from mmrft.evaluation.runner import evaluate, evaluate_predictions

__all__ = [
    "Decoding", "EvalReport", "ParseOptions", "PredBox", "Prediction", "RecordResult", "Scorer",
    "compare", "evaluate", "evaluate_predictions", "load_eval", "parse_prediction", "read_predictions",
]  # fmt: skip
