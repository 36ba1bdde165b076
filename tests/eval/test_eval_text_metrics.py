"""Hand-checked cases for the answer-matching metrics."""

from deltatune.eval.text_metrics import answer_contained, exact_match, normalise


def test_normalise():
    assert normalise("  The Eiffel-Tower!!\n\tcosts $1,200. ") == "the eiffel tower costs 1200"
    assert normalise("U.S.A.") == "usa"
    assert normalise("and/or") == "and or"
    assert normalise("Café  Müller") == "café müller"
    assert normalise("...") == ""


def test_exact_match():
    assert exact_match("Paris.", "paris")
    assert exact_match("  PARIS ", "Paris!")
    assert not exact_match("Paris, France", "Paris")
    assert exact_match("9 a.m.", "9 am")


def test_answer_contained_whole_words():
    assert answer_contained("The capital is Paris.", "paris")
    assert answer_contained("It opened in 2012!", "2012")
    assert not answer_contained("It opened in 2012", "12")  # not inside another number
    assert not answer_contained("Parisian food", "Paris")
    assert answer_contained("Maria Lopez-Garcia founded it", "Maria Lopez Garcia")
    assert not answer_contained("anything", "")


def test_number_words_become_digits():
    assert normalise("Seven days, $1,200") == "7 days 1200"
    assert exact_match("eight", "8")
    assert answer_contained("A spider has eight legs.", "8")
    assert normalise("twenty-one, Forty two, ninety") == "21 42 90"
    assert not answer_contained("It has twenty-one rooms", "1")
    assert answer_contained("It has twenty-one rooms", "21")


def test_answer_contained_allows_plurals_only():
    assert answer_contained("It is made from grapes.", "grape")
    assert answer_contained("A litter of kittens", "kitten")
    assert answer_contained("two boxes", "box")
    assert not answer_contained("The honeybee", "bee")
    assert not answer_contained("darkness", "dark")
    assert not answer_contained("12345", "123")
