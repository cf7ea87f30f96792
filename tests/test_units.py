"""Words, costs, selection and reassembly: the shared mechanics of every text method."""

import numpy as np

from gistify.text.words import assemble, per_word, segment, select, sentence_ids, token_to_word, word_costs


def words_of(text):
    return [text[s:e] for s, e in segment(text)]


def test_segment_words_and_cjk():
    assert words_of("  Hello, world!\n\nNew  para ") == ["Hello,", "world!", "New", "para"]
    assert words_of("東京 is 大") == ["東", "京", "is", "大"]
    assert words_of("") == [] and segment("   ").shape == (0, 2)


def test_sentences_end_at_stops_and_line_breaks():
    text = 'It rained. "Really?" she asked (twice.) Then\n- a list item\n- another one! ok'
    words = segment(text)
    groups: dict[int, list[str]] = {}
    for (a, b), s in zip(words, sentence_ids(text, words)):
        groups.setdefault(int(s), []).append(text[a:b])
    assert list(groups.values()) == [
        ["It", "rained."],
        ['"Really?"'],
        ["she", "asked", "(twice.)"],
        ["Then"],
        ["-", "a", "list", "item"],
        ["-", "another", "one!"],
        ["ok"],
    ]
    assert len(sentence_ids("", segment(""))) == 0


def test_assemble_keeps_original_whitespace_and_paragraph_breaks():
    text = "alpha beta gamma\n\ndelta epsilon\nzeta  eta"
    words = segment(text)  # alpha beta gamma delta epsilon zeta eta
    keep = np.array([1, 1, 0, 0, 1, 0, 1], dtype=bool)
    out, spans = assemble(text, words, keep)
    # the dropped "gamma\n\ndelta" gap keeps its paragraph break, the "\nzeta  " gap its line break
    assert out == "alpha beta\n\nepsilon\neta"
    assert spans == [(0, 10), (24, 31), (38, 41)]
    assert [text[s:e] for s, e in spans] == ["alpha beta", "epsilon", "eta"]
    assert assemble(text, words, np.zeros(7, bool)) == ("", [])


def test_assemble_cjk_gap_without_whitespace_joins_directly():
    text = "東京は日本"
    out, spans = assemble(text, segment(text), np.array([1, 0, 1, 0, 1], bool))
    assert out == "東は本" and spans == [(0, 1), (2, 3), (4, 5)]


def test_token_to_word_assigns_leading_space_tokens_to_the_next_word():
    text = "ab cd  ef"
    words = segment(text)  # ab [0,2) cd [3,5) ef [7,9)
    starts = np.array([0, 2, 3, 5, 7, 9])  # 'ab', ' cd'(2), 'cd'... , '  ef'(5), trailing(9)
    assert token_to_word(starts, words).tolist() == [0, 1, 1, 2, 2, 3]
    assert word_costs(starts, words).tolist() == [1, 2, 2]


def test_per_word_aggregates_and_fills_covered_words():
    text = "ab cd 東京"
    words = segment(text)  # ab, cd, 東, 京
    starts = np.array([0, 1, 2, 6])  # 'a','b',' cd','東京' (one token covers both CJK characters)
    values = np.array([1.0, 3.0, 5.0, 7.0])
    assert per_word(values, starts, words, "max").tolist() == [3.0, 5.0, 7.0, 7.0]
    assert per_word(values, starts, words, "mean").tolist() == [2.0, 5.0, 7.0, 7.0]
    assert per_word(values, starts, words, "sum").tolist() == [4.0, 5.0, 7.0, 7.0]


def test_select_greedy_fills_gaps_or_stops():
    scores = np.array([5.0, 4.0, 3.0, 2.0])
    costs = np.array([2, 5, 1, 1])
    none = np.zeros(4, bool)
    assert select(scores, costs, 4, none, fill_gaps=True).tolist() == [True, False, True, True]
    assert select(scores, costs, 4, none, fill_gaps=False).tolist() == [True, False, False, False]
    protected = np.array([False, True, False, False])
    assert select(scores, costs, 4, protected).tolist() == [False, True, False, False]
    assert select(np.array([1.0, -np.inf]), np.array([1, 1]), 5, np.zeros(2, bool)).tolist() == [True, False]
