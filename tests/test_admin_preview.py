"""Tier 1: the HTML body rewritten for the preview frame (no database)."""

from __future__ import annotations

import pytest

from django_inbound_smtp.admin._preview import external_target, rewrite


def _rewrite(html: str, *, allow_remote: bool = False) -> tuple[str, int, int]:
    preview = rewrite(
        html,
        image_url=lambda cid: f"/img/{cid}" if cid == "known@x" else None,
        link_url=lambda target: f"/leave?{target}",
        allow_remote=allow_remote,
    )
    return preview.html, preview.remote_images, preview.inline_images


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://example.org/a", "https://example.org/a"),
        ("  HTTP://example.org/", "HTTP://example.org/"),
        ("//example.org/x", "https://example.org/x"),
        ("mailto:a@example.org", "mailto:a@example.org"),
        ("java\tscript:alert(1)", None),
        ("\x01javascript:alert(1)", None),
        ("data:text/html,x", None),
        ("vbscript:x", None),
        ("/admin/", None),
        ("relative/path", None),
        ("https:", None),
        ("http://[::1", None),
    ],
)
def test_only_http_https_and_mailto_are_link_targets(given: str, expected: str | None) -> None:
    assert external_target(given) == expected


def test_cid_forms_and_case() -> None:
    html, _remote, inline = _rewrite(
        '<img src="cid:known@x"><img src="CID:%3Cknown@x%3E"><img src=" cid:<known@x> ">'
        '<img src="cid:unknown@x" alt="gone">'
    )
    assert html.count('src="/img/known@x"') == 3
    assert inline == 3
    assert '<img alt="gone">' in html


def test_remote_references_are_counted_and_moved_aside() -> None:
    source = (
        "<style>td { background: url( 'https://t.example/a.png' ) } a>b {}</style>"
        '<img srcset="small.png 1x, https://t.example/2x.png 2x">'
        '<td background="//t.example/bg.gif"><img src="data:image/gif;base64,R0lGOD">'
    )
    html, remote, _inline = _rewrite(source)
    assert remote == 3
    assert "url(about:invalid)" in html
    assert "a>b {}" in html  # CSS text is not escaped
    assert 'data-blocked-srcset="small.png 1x, https://t.example/2x.png 2x"' in html
    assert 'data-blocked-background="//t.example/bg.gif"' in html
    assert 'src="data:image/gif;base64,R0lGOD"' in html  # data: images are not remote
    allowed, remote, _inline = _rewrite(source, allow_remote=True)
    assert remote == 3
    assert "url( 'https://t.example/a.png' )" in allowed
    assert ' srcset="small.png 1x, https://t.example/2x.png 2x"' in allowed


def test_our_base_comes_after_the_doctype_and_theirs_is_dropped() -> None:
    html, _remote, _inline = _rewrite(
        '<!DOCTYPE html><html><head><base href="https://evil.example/" target="_self">'
        '<meta http-equiv="Refresh" content="0;url=https://x.example/"><meta charset="utf-8">'
    )
    assert html.startswith('<!DOCTYPE html><base target="_blank"><html><head>')
    assert "evil.example" not in html
    assert "x.example" not in html
    assert '<meta charset="utf-8">' in html


def test_attributes_are_escaped_and_odd_names_dropped() -> None:
    html, _remote, _inline = _rewrite(
        '<p title="a &quot;b&quot; &lt;c&gt;" title="second" x"y="1" onclick=go()>'
        "t &amp; &lt;u&gt;</p>"
    )
    assert '<p title="a &quot;b&quot; &lt;c&gt;" onclick="go()">' in html  # first title wins
    assert "second" not in html
    assert "t &amp; &lt;u&gt;" in html


def test_targets_are_ours() -> None:
    html, _remote, _inline = _rewrite(
        '<a href="https://example.org/" target="_top">x</a><form target="_top"></form>'
        '<area href="javascript:x" target="_parent">'
    )
    assert 'target="_top"' not in html
    assert 'target="_parent"' not in html
    assert (
        '<a href="/leave?https://example.org/" target="_blank" rel="noopener noreferrer">' in html
    )
    assert "<area>" in html


# What opens a connection from the frame although CSP and the sandbox are in place:
# Chromium preconnects for <link rel=preconnect> (CSP does not cover it), so the
# sender learns that the message was opened, when and from where.
_PRECONNECT = '<link rel="preconnect" href="https://t.example/">'


@pytest.mark.parametrize(
    "html",
    [
        _PRECONNECT,
        '<link rel="dns-prefetch" href="//t.example">',
        '<link rel="stylesheet" href="https://t.example/s.css">',
        # Constructs Python's tokenizer reads differently from a browser (HTML's
        # parsing rules): it sees a comment, CDATA or style text where a browser
        # sees the element after it. Whatever it saw must not be written back raw.
        f"<!--> {_PRECONNECT} -->",
        f"<!---> {_PRECONNECT} -->",
        f"<![CDATA[ x>{_PRECONNECT} ]]>",
        f"<style>p {{}}</style x>{_PRECONNECT}</style>",
        f"<style>p {{}}</style\t>{_PRECONNECT}",
        f"<? x>{_PRECONNECT} ?>",
    ],
)
def test_nothing_that_connects_out_survives_the_rewrite(html: str) -> None:
    rewritten, _remote, _inline = _rewrite(f"<p>before</p>{html}<p>after</p>")
    assert "t.example" not in rewritten
    assert "<p>before</p>" in rewritten
