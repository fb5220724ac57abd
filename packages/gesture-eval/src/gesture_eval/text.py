"""Text metrics for gesture->text and audio->text: corpus BLEU (sacrebleu) and ROUGE-L
(rouge-score). One convention each (not from the gesture references): sacrebleu's default
13a tokenisation, score on the 0-100 scale; ROUGE-L F-measure (0-1) with Porter stemming,
averaged over sentence pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

from gesture_eval.errors import EvalError

__all__ = ["bleu", "rouge_l"]


def _check(hypotheses: Sequence[str], references: Sequence) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise EvalError("hypotheses and references must be lists of strings, not a single string")
    if len(hypotheses) == 0:
        raise EvalError("hypotheses is empty")
    if len(hypotheses) != len(references):
        raise EvalError(
            f"hypotheses ({len(hypotheses)}) and references ({len(references)}) differ in length"
        )
    for i, h in enumerate(hypotheses):
        if not isinstance(h, str):
            raise EvalError(f"hypotheses[{i}] must be a string, found {type(h).__name__}")
    for i, r in enumerate(references):
        if not (isinstance(r, str) or all(isinstance(x, str) for x in r)):
            raise EvalError(f"references[{i}] must be a string or a list of strings, found {r!r}")


def bleu(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Corpus BLEU (0-100). ``references[i]`` is one string or a list of alternatives."""
    import sacrebleu

    _check(hypotheses, references)
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    width = max(len(r) for r in refs)
    # sacrebleu wants one stream per reference slot; pad missing alternatives with None.
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams).score)


def rouge_l(
    hypotheses: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True
) -> float:
    """Mean ROUGE-L F-measure (0-1) over sentence pairs."""
    from rouge_score import rouge_scorer

    _check(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    scores = [
        scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references, strict=True)
    ]
    return float(sum(scores) / len(scores))
