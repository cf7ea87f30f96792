"""The fidelity guard and protection that keeps meaning (issue 14, items 5, 6, 7): the risk report on every
result, the fallback, no empty result, negations kept with their phrase, protected content over the budget."""

from __future__ import annotations

import json

import pytest

import gistify
from conftest import prose
from gistify.cli import main
from gistify.text.fidelity import items, risk, summary
from gistify.text.pipeline import ProtectedOverflow
from gistify.text.protect import protected_ranges

pytestmark = pytest.mark.usefixtures("one_thread")

CL100K = dict(tokenizer="cl100k_base")  # no scorer needed for random and truncate
SOURCE = (
    "The Eiffel Tower in Paris is 330 m tall. However, it was not built by Gustave Eiffel alone. "
    "Set max_retries to 5 in config.yaml and do NOT delete the files in /var/lib/app; see "
    "https://example.org/docs/setup for details. New York isn't far from Boston."
)


def test_items_of_each_kind():
    found = items(SOURCE)
    assert found["numbers"] == ["330", "5"]
    assert found["negations"] == ["not", "NOT", "isn't"]
    assert found["identifiers"] == ["max_retries", "config.yaml", "/var/lib/app", "https://example.org/docs/setup"]
    assert found["entities"] == ["Eiffel Tower", "Paris", "Gustave Eiffel", "New York", "Boston"]
    assert "However" not in found["entities"] and "The" not in " ".join(found["entities"])


def test_risk_counts_occurrences_lost():
    assert risk(SOURCE, SOURCE)["score"] == 0.0 and risk(SOURCE, SOURCE)["n_lost"] == 0
    out = SOURCE.replace(" not ", " ").replace("330 ", "").replace("New York ", "")
    r = risk(SOURCE, out)
    assert r["lost"]["negations"] == ["not"] and r["lost"]["numbers"] == ["330"]
    assert r["lost"]["entities"] == ["New York"] and r["lost"]["identifiers"] == []
    assert r["n_lost"] == 3 and r["n_total"] == sum(r["counts"].values()) == 14
    assert r["score"] == pytest.approx((1 + 1 + 0.5) / (2 + 3 + 0.5 * 5 + 4), abs=1e-4)
    assert {"kind": "numbers", "text": "330", "lost": 1, "total": 1} in r["items"]
    assert "lost 3 of 14 items" in summary(r)
    # a number kept elsewhere does not hide one that was dropped: counts, not presence
    two = "Take 5 mg in the morning and 5 mg at night."
    assert risk(two, "Take 5 mg in the morning and at night.")["lost_counts"]["numbers"] == 1
    assert risk(two, "Take 15 mg in the morning")["lost_counts"]["numbers"] == 2  # "15" is not "5"
    assert risk("", "")["score"] == 0.0


def test_every_result_carries_a_risk_report(capsys, tmp_path):
    r = gistify.compress(SOURCE, keep=0.3, method="random", fallback="off", **CL100K)
    assert r.risk["n_total"] == 14 and 0 < r.risk["score"] <= 1 and not r.fell_back
    d = r.to_dict()
    assert d["risk"] == r.risk and d["fell_back"] is False
    same = gistify.compress(SOURCE, keep=1.0, method="random", **CL100K)
    assert same.risk["score"] == 0.0
    doc = tmp_path / "doc.txt"
    doc.write_text(SOURCE)
    assert main(["compress", str(doc), "--keep", "0.3", "-m", "random", "--tokenizer", "cl100k_base", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["risk"]["n_total"] == 14
    assert main(["compress", str(doc), "--keep", "0.3", "-m", "random", "--tokenizer", "cl100k_base"]) == 0
    assert "lost " in capsys.readouterr().err


def test_fallback_unchanged_or_higher_keep():
    r = gistify.compress(SOURCE, keep=0.2, method="random", fallback="unchanged", max_risk=0.1, **CL100K)
    assert r.fell_back and r.text == SOURCE and r.risk["score"] == 0.0 and "fell back" in r.notes[-1]
    r = gistify.compress(SOURCE, keep=0.2, method="random", fallback=0.8, max_risk=0.1, **CL100K)
    # the budget stays the user's, and the note says by how much the fallback is over it
    assert r.fell_back and r.budget == "keep=0.2" and r.fallback_step == "compressed again at keep=0.8"
    assert r.tokens_out > r.target_tokens and f"{r.tokens_out - r.target_tokens} over the budget" in r.notes[-1]
    raw = gistify.compress(SOURCE, keep=0.2, method="random", fallback="off", max_risk=0.0, **CL100K)
    assert not raw.fell_back and raw.text != SOURCE and raw.risk["score"] > 0
    for bad in (dict(fallback="always"), dict(fallback=0.0), dict(max_risk=2)):
        with pytest.raises(ValueError):
            gistify.compress(SOURCE, keep=0.2, method="random", **CL100K, **bad)


def test_fallback_from_the_cli(tmp_path, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text(SOURCE)
    argv = ["compress", str(doc), "--keep", "0.2", "-m", "random", "--tokenizer", "cl100k_base", "--json"]
    assert main([*argv, "--fallback", "unchanged", "--max-risk", "0.05"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fell_back"] and out["text"] == SOURCE
    assert main([*argv, "--fallback", "0.9", "--max-risk", "0.05"]) == 0
    assert json.loads(capsys.readouterr().out)["fallback_step"] == "compressed again at keep=0.9"


# -- no empty results (item 6) ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,params", [("random", {}), ("truncate", {"side": "tail"}), ("truncate", {})])
@pytest.mark.parametrize("keep", [0.2, 0.01])
def test_a_word_longer_than_the_budget_is_cut_not_dropped(method, params, keep):
    word = "".join(f"{i:04d}abcdef" for i in range(500))[:5000]
    r = gistify.compress(word, keep=keep, method=method, **params, **CL100K)
    assert r.text and word.startswith(r.text) and 0 < r.tokens_out <= r.target_tokens
    assert r.kept_spans == [(0, len(r.text))] and "cut inside" in r.notes[0]
    r = gistify.compress(f"Note: {word}", tokens=1, method=method, **params, **CL100K)
    assert r.text and r.tokens_out == 1


def test_no_empty_result_from_the_cli(tmp_path, capsys):
    doc = tmp_path / "blob.txt"
    doc.write_text("Z" * 5000)
    assert main(["compress", str(doc), "--keep", "0.2", "-m", "random", "--tokenizer", "cl100k_base"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() and set(out.strip()) == {"Z"} and "cut inside" in err


def test_no_empty_result_with_the_scorer(tiny_scorer):
    word = "x" * 3000
    for method in ("selfinfo", "reinforce"):
        r = gistify.compress(word, "what?", keep=0.2, method=method, scorer=tiny_scorer)
        assert r.text and r.tokens_out <= r.target_tokens


# -- negations keep their phrase, protected content over the budget (item 7) -------------------------------------


def test_negation_is_protected_with_what_it_negates():
    def spans(t):
        return [t[s:e] for s, e in protected_ranges(t, negations=True)]

    assert spans("Please do NOT delete the files in the folder.") == ["do NOT delete the files"]
    assert spans("It isn't working, sadly.") == ["isn't working"]
    assert spans("Never at night! No.") == ["Never at night", "No"]
    text = "Please do NOT delete the files in the folder, they are needed by the servers every single night."
    for seed in range(5):
        r = gistify.compress(text, tokens=8, method="random", seed=seed, protect_negations=True, **CL100K)
        assert "do NOT delete the files" in r.text


def test_protected_overflow_raises_before_scoring_by_default(tiny_scorer, monkeypatch):
    text = "1 2 3 4 5 6 7 8 9 10 11 12 and some words here"
    from gistify.text.reinforce import ContextualReinforcement

    def no_scoring(*a, **k):
        raise AssertionError("scored before the overflow check")

    monkeypatch.setattr(ContextualReinforcement, "score", no_scoring)
    with pytest.raises(ProtectedOverflow, match=r"takes \d+ tokens, over the budget of 3.*on_protected_overflow") as e:
        gistify.compress(text, tokens=3, method="reinforce", scorer=tiny_scorer, protect_numbers=True)
    assert isinstance(e.value, ValueError) and e.value.target == 3 and e.value.taken > 3


def test_protected_overflow_keep_and_trim():
    text = "Take 5 mg at 8 am, 10 mg at 2 pm and 15 mg at 9 pm, never more than 30 mg a day, with water."
    kw = dict(tokens=6, method="random", protect_numbers=True, fallback="off", **CL100K)
    kept = gistify.compress(text, on_protected_overflow="keep", **kw)
    assert all(n in kept.text.split() for n in ("5", "8", "10", "2", "15", "9", "30"))
    assert "over the budget" in kept.notes[0] and kept.tokens_out > 6
    trim = gistify.compress(text, protect=[r"never more"], on_protected_overflow="trim", **kw)
    assert trim.tokens_out <= 6 and "never more" in trim.text  # the user's own pattern first
    assert 0 < len(trim.protected) < len(kept.protected) and "only" in trim.notes[0]
    for s, e in trim.protected:
        assert text[s:e] in trim.text
    with pytest.raises(ValueError, match="on_protected_overflow must be one of"):
        gistify.compress(text, on_protected_overflow="ignore", **kw)


def test_protected_overflow_from_the_cli(tmp_path, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text("1 2 3 4 5 6 7 8 9 10 11 12 and some words here")
    argv = ["compress", str(doc), "--tokens", "3", "-m", "random", "--tokenizer", "cl100k_base", "--protect-numbers"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--on-protected-overflow keep" in err and "over the budget of 3" in err
    assert main([*argv, "--on-protected-overflow", "keep"]) == 0
    assert "12" in capsys.readouterr().out
    assert main([*argv, "--on-protected-overflow", "trim"]) == 0


def test_risk_on_real_prose_is_reported_per_kind():
    text = prose()[:3000]
    r = gistify.compress(text, keep=0.3, method="truncate", **CL100K)
    assert r.risk["counts"]["entities"] > 0 and r.risk["n_lost"] > 0
    assert r.risk["score"] == risk(text, r.text)["score"]
