"""Tier 1: the new text of a reply (``parsing.quoted``, ``parsing.quoted_html``).

The corpus in ``tests/fixtures/replies/`` (one ``.eml`` per client, language and hard
case, with the new text a person would name beside it) is run whole: at least 95% of
the replies exact, and in none of them is a line of new text lost. The score is
printed (``pytest -s tests/test_reply_text.py -k corpus``) and quoted in the README.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from django_inbound_smtp.parsing import quoted_html
from django_inbound_smtp.parsing.mime import parse_message
from django_inbound_smtp.parsing.quoted import reply_text
from django_inbound_smtp.parsing.quoted_html import html_text, reply_html

CORPUS = Path(__file__).parent / "fixtures" / "replies"
CASES = sorted(path.stem for path in CORPUS.glob("*.eml"))
REQUIRED_SCORE = 0.95


@dataclass
class Result:
    name: str
    got: str
    expected: str

    @property
    def exact(self) -> bool:
        return self.got.strip() == self.expected.strip()

    @property
    def lost(self) -> list[str]:
        """The lines of the expected text missing from the result, in order."""
        got = iter(line.strip() for line in self.got.splitlines())
        return [
            line
            for line in (x.strip() for x in self.expected.splitlines())
            if line and not any(line == candidate for candidate in got)
        ]


def new_text_of(name: str) -> Result:
    """The reply text of one corpus message, as the parse step computes it."""
    parsed = parse_message((CORPUS / f"{name}.eml").read_bytes())
    assert not parsed.error, parsed.error
    if parsed.text:
        got = reply_text(parsed.text, subject=parsed.subject)
    else:
        got = html_text(reply_html(parsed.html, subject=parsed.subject))
    expected = (CORPUS / f"{name}.expected.txt").read_text(encoding="utf-8")
    return Result(name, got, expected)


def new_html_text_of(name: str) -> Result | None:
    expected = CORPUS / f"{name}.expected-html.txt"
    if not expected.exists():
        return None
    parsed = parse_message((CORPUS / f"{name}.eml").read_bytes())
    got = html_text(reply_html(parsed.html, subject=parsed.subject))
    # Words only: the markup decides line breaks, the words are the new text.
    return Result(name, " ".join(got.split()), " ".join(expected.read_text().split()))


def test_the_corpus_is_large_and_covers_the_clients_and_languages() -> None:
    assert len(CASES) >= 60
    for client in ("gmail", "outlook", "apple", "ios_mail", "thunderbird", "yahoo", "proton"):
        assert any(name.startswith(client) for name in CASES), client
    for client in ("fastmail", "k9", "fairemail", "mutt"):
        assert any(name.startswith(client) for name in CASES), client
    for lang in ("en", "de", "fr", "es", "it", "nl", "pt", "ru", "ja"):
        assert sum(name.endswith(f"_{lang}") or f"_{lang}_" in name for name in CASES) >= 3, lang
    for name in CASES:
        assert (CORPUS / f"{name}.expected.txt").exists(), name


def test_corpus_text_score_and_nothing_lost(capsys: pytest.CaptureFixture[str]) -> None:
    results = [new_text_of(name) for name in CASES]
    exact = sum(result.exact for result in results)
    lost = {result.name: result.lost for result in results if result.lost}
    with capsys.disabled():
        print(
            f"\nreply_text: {exact}/{len(results)} exact ({exact / len(results):.1%}), "
            f"{len(lost)} with new text lost"
        )
        for result in results:
            if not result.exact:
                print(f"  not exact: {result.name}")
    assert not lost, lost
    assert exact / len(results) >= REQUIRED_SCORE


def test_corpus_html_score_and_nothing_lost(capsys: pytest.CaptureFixture[str]) -> None:
    results = [r for r in map(new_html_text_of, CASES) if r is not None]
    assert len(results) >= 40
    exact = sum(result.exact for result in results)
    with capsys.disabled():
        print(f"\nreply_html: {exact}/{len(results)} exact ({exact / len(results):.1%})")
    # Words, not lines: a lost word shows as the expected words not being in order.
    lost = [r.name for r in results if r.expected and r.expected not in r.got]
    assert not lost, lost
    assert exact / len(results) >= REQUIRED_SCORE


# --- The rules, one by one --------------------------------------------------------


def test_top_posting_drops_the_attribution_and_the_quote() -> None:
    text = "Yes.\n\nOn Mon, 1 Jun 2026 at 10:00, Bob <bob@example.com> wrote:\n> Ready?\n"
    assert reply_text(text) == "Yes."


def test_bottom_posting_drops_the_leading_quote() -> None:
    text = "On Mon, 1 Jun 2026 at 10:00, Bob <bob@example.com> wrote:\n> Ready?\n\nYes.\n"
    assert reply_text(text) == "Yes."


def test_an_inline_reply_is_kept_up_to_its_last_new_line() -> None:
    text = "> Friday?\nYes.\n> Installer?\nNo.\n> Bob\n"
    assert reply_text(text) == "> Friday?\nYes.\n> Installer?\nNo."


def test_nothing_new_is_empty() -> None:
    assert reply_text("> all quoted\n>\n> Bob\n") == ""
    assert reply_text("") == ""
    assert reply_html("<div><br></div><blockquote type='cite'>x</blockquote>") == ""


def test_prose_that_looks_like_an_attribution_is_kept() -> None:
    # No date, no address: prose, even followed by a quote.
    text = "On second thought, here is what Bob wrote:\n> ship it\n\nI agree.\n"
    assert reply_text(text) == text.strip()
    assert reply_text("On Monday I wrote: no. Still no.\n") == "On Monday I wrote: no. Still no."


def test_a_wrapped_attribution_is_recognised_only_from_its_first_line() -> None:
    text = "Done.\nOn Mon, 1 Jun 2026, Bob <\nbob@example.com> wrote:\n> x\n"
    assert reply_text(text) == "Done."
    # The new line before an attribution is never joined to it.
    assert reply_text("Done.\nOn 2026-06-01 10:00, Bob wrote:\n> x\n") == "Done."


def test_signature_separator_and_mobile_lines_go() -> None:
    text = "Ok.\n\nSent from my iPhone\n-- \nAlice\n+1 555 0100\n"
    assert reply_text(text) == "Ok."
    # A mobile-like line in the middle of the text is text.
    middle = "Sent from my iPhone, so short.\nMore later.\n"
    assert reply_text(middle) == middle.strip()


def test_a_contact_block_goes_only_after_a_closing_and_a_name() -> None:
    signed = "Done.\n\nKind regards,\nAlice\nCEO | Example\n+44 20 7946 0000\n"
    assert reply_text(signed) == "Done.\n\nKind regards,\nAlice"
    # Without the closing the numbers are the new text.
    numbers = "Call me:\nAlice\n+44 20 7946 0000\n"
    assert reply_text(numbers) == numbers.strip()


def test_forwards_are_kept() -> None:
    header = "From: Billing <b@vendor.example>\nSent: Monday\nTo: Alice\nSubject: Invoice\n\nPay.\n"
    assert reply_text(f"FYI\n\n{header}", subject="FW: Invoice") == f"FYI\n\n{header}".strip()
    assert reply_text(f"FYI\n\n{header}", subject="RE: Invoice") == "FYI"


def test_reply_html_keeps_the_senders_markup_and_drops_the_quote() -> None:
    source = (
        '<div dir="ltr"><b>Yes</b> &amp; soon.</div><div class="gmail_quote">'
        '<div class="gmail_attr">On Mon, 1 Jun 2026, Bob &lt;bob@example.com&gt; wrote:</div>'
        '<blockquote class="gmail_quote">Ready?</blockquote></div>'
    )
    assert reply_html(source) == '<div dir="ltr"><b>Yes</b> &amp; soon.</div>'


def test_reply_html_cut_keeps_the_document_balanced() -> None:
    source = (
        '<html><body><div>Yes.</div><div id="appendonsend"></div><hr>'
        '<div id="divRplyFwdMsg"><b>From:</b> Bob</div><div>Ready?</div></body></html>'
    )
    assert reply_html(source) == "<html><body><div>Yes.</div></body></html>"


# --- Hostile input: bounded time ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        ("On 1 " + "x" * 390 + " wrote:\n") * 1000,
        ("On 1 Jun, Bob <" + "a" * 300 + "\n") * 1000,
        ("Sent from my phone\n") * 10_000,
        ("From: a\nSent: b\n") * 5_000,
        ("> q\nnew\n") * 10_000,
        ("Kind regards,\nAlice\n+1 555 0100\n") * 4_000,
        "x" * 1_000_000,
    ],
    ids=["attributions", "wrapped", "mobile", "headers", "inline", "closings", "one-line"],
)
def test_hostile_text_is_linear(text: str) -> None:
    # Each is ~10-20k lines of what the rules look at closely; linear code does it in
    # well under a second, a quadratic rule would take minutes.
    started = time.perf_counter()
    reply_text(text)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    "source",
    [
        "<div>" * 10_000 + "x",
        "<blockquote type=cite>q</blockquote><div>n</div>" * 3_000,
        "<div>From: a<br>Sent: b<br>To: c</div>" * 2_000,
        "<p>" + "x " * 200_000,
    ],
    ids=["deep", "many-quotes", "many-headers", "long-text"],
)
def test_hostile_html_is_bounded(source: str) -> None:
    # Nesting is capped (deeper elements are read as siblings), quotes and headers are
    # each looked at once, and a body past MAX_TOKENS is kept whole.
    started = time.perf_counter()
    reply_html(source)
    html_text(source)
    assert time.perf_counter() - started < 2


def test_html_past_the_token_limit_is_kept_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quoted_html, "MAX_TOKENS", 100)
    source = "<div>new</div>" + "<blockquote type=cite>q</blockquote>" * 40
    assert reply_html(source) == source
    assert reply_html("<div>new</div><blockquote type=cite>q</blockquote>") == "<div>new</div>"
