"""The meaning check (gistify.text.meaning): a dropped "not" or number whose clause was kept changes meaning; a
clause dropped whole loses information but says nothing false; a name the question asks about must stay."""

from __future__ import annotations

from gistify.text.meaning import risk

SOURCE = (
    "The door is not locked. The timeout is 30 seconds. Call max_retries before the office in Paris closes. "
    "NASA approved the plan."
)


def test_risk_nothing_lost():
    r = risk(SOURCE, SOURCE)
    assert r["score"] == 0 and not r["meaning_changed"] and not r["changed"]
    assert r["counts"] == {"numbers": 1, "negations": 1, "identifiers": 1, "entities": 2}


def test_risk_negation_dropped_from_a_kept_clause_changes_meaning():
    r = risk(SOURCE, SOURCE.replace("is not locked", "is locked"))
    assert r["meaning_changed"]
    assert [c["kind"] for c in r["changed"]] == ["negation"]
    assert "[not] locked" in r["changed"][0]["context"]


def test_risk_whole_clause_dropped_loses_information_but_changes_no_meaning():
    r = risk(SOURCE, SOURCE.replace("The door is not locked. ", ""))
    assert not r["meaning_changed"] and not r["changed"]
    assert len(r["lost"]["negations"]) == 1 and r["score"] > 0


def test_risk_number_dropped_from_its_label():
    r = risk(SOURCE, SOURCE.replace(" 30 seconds", " seconds"))
    assert r["meaning_changed"] and r["changed"][0]["kind"] == "number" and r["lost"]["numbers"] == ["30"]


def test_risk_question_terms_and_entities():
    short = SOURCE.replace(" in Paris", "").replace("NASA approved the plan.", "")
    r = risk(SOURCE, short, question="When does the office in Paris close?")
    assert r["question_lost"] == ["Paris"] and r["meaning_changed"]
    assert r["lost"]["entities"] == ["NASA", "Paris"]
    # a name gone from a kept phrase makes the text say less, not something false: in the score only
    assert not risk(SOURCE, short)["meaning_changed"]


def test_risk_aligns_repeated_words():
    src = " ".join(f"Row {i}: the value is not {i} and the flag is set." for i in range(600))
    words = src.split()
    # every "not" dropped, and every other row's "flag is set." with it: the repeated words must still align
    kept = " ".join(w for k, w in enumerate(words) if w != "not" and not (k // 12 % 2 and k % 12 >= 9))
    r = risk(src, kept)
    assert len(r["changed"]) == 600 and all(c["kind"] == "negation" for c in r["changed"])
