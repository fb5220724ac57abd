import pytest

from gesture_data.datasets import synthetic


def test_sentences_deterministic_prefix_and_vocabulary():
    a = synthetic.sentences(200, seed=5)
    assert a == synthetic.sentences(200, seed=5)
    assert synthetic.sentences(50, seed=5) == a[:50]
    assert a != synthetic.sentences(200, seed=6)
    vocab = set(synthetic._EN["function"]) | set(synthetic._EN["content"])
    vocab |= {w for ws in synthetic.SEMANTIC_WORDS["en"].values() for w in ws}
    for s in a:
        words = s.split(" ")
        assert 3 <= len(words) <= 7 and set(words) <= vocab
    ko = synthetic.sentences(20, seed=5, language="ko")
    assert all(3 <= len(s.split()) <= 7 for s in ko) and ko != a[:20]
    assert synthetic.sentences(0) == []


@pytest.mark.parametrize(
    ("kw", "field"), [({"n": -1}, "n"), ({"n": 2.5}, "n"), ({"n": 3, "language": "fr"}, "language")]
)
def test_sentences_bad_arguments(kw, field):
    with pytest.raises(ValueError, match=field):
        synthetic.sentences(**kw)
