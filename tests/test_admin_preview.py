"""Tier 1: the HTML body rewritten for the preview frame (no database)."""

from __future__ import annotations

import re
import time

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


# Remote images the first rewriter let through to the policy alone: SVG references,
# CSS escapes, image-set() strings, and URL spellings a browser reads as another host.
@pytest.mark.parametrize(
    "html",
    [
        '<svg><image href="https://t.example/p.png"/></svg>',
        '<svg><image xlink:href="//t.example/p.png"></image></svg>',
        '<svg><use href="https://t.example/s.svg#a"/></svg>',
        '<svg><filter><feImage href="https://t.example/f.png"/></filter></svg>',
        '<p style="background: url(\\68 ttps://t.example/e.png)">x</p>',
        '<p style="background: \\75 rl(https://t.example/e.png)">x</p>',
        "<style>p { background: u\\72l('\\68ttps://t.example/e.png') }</style>",
        '<p style="background: url(&quot;\\2f\\2ft.example/e.png&quot;)">x</p>',
        '<style>p { background-image: image-set("https://t.example/a.png" 1x) }</style>',
        "<style>p { background: -webkit-image-set('//t.example/a.png' 1x, 'b.png' 2x) }</style>",
        "<style>p { background: image-set(url(https://t.example/a.png) 1x) }</style>",
        '<img src="\\\\t.example/p.gif">',
        '<img src="/\\t.example/p.gif">',
        '<img src="http:t.example/p.gif">',
        "<style>@import 'https://t.example/s.css';</style>",
    ],
)
def test_remote_images_in_every_spelling_are_counted_and_blocked(html: str) -> None:
    rewritten, remote, _inline = _rewrite(f"<p>before</p>{html}<p>after</p>")
    assert remote >= 1
    blocked = re.sub(r'data-blocked-[a-z:]+="[^"]*"', "", rewritten)
    assert "t.example" not in blocked
    assert "<p>before</p>" in rewritten
    assert "<p>after</p>" in rewritten
    allowed, remote_allowed, _inline = _rewrite(html, allow_remote=True)
    assert remote_allowed == remote
    assert "t.example" in allowed


def test_svg_references_within_the_document_and_cid_images_stay() -> None:
    html, remote, inline = _rewrite(
        '<svg><use href="#shape"/><image href="cid:known@x"/><image href="cid:unknown@x"/>'
        '<linearGradient xlink:href="#g"/></svg>'
    )
    assert remote == 0
    assert inline == 1
    assert '<use href="#shape" />' in html
    assert '<image href="/img/known@x" />' in html
    assert "<image />" in html
    assert '<lineargradient xlink:href="#g" />' in html


def test_css_escapes_that_name_no_remote_url_are_kept_as_written() -> None:
    css = 'p { content: "\\201C"; background: url(\\2e/local.png) } a { color: red }'
    html, remote, _inline = _rewrite(f"<style>{css}</style>")
    assert remote == 0
    assert css in html


@pytest.mark.parametrize(
    "css",
    [
        "url(" + "\\41" * 30000,  # every escape read two ways: 2^n tries on a failed match
        "url(" * 30000,
        "a" * 200000,
        "image-set(" * 30000,
    ],
)
def test_hostile_css_is_scanned_in_linear_time(css: str) -> None:
    started = time.perf_counter()
    _rewrite(f"<style>{css}</style>")
    assert time.perf_counter() - started < 2  # about 0.2 s on a slow machine
