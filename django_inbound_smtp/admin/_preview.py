"""The HTML body, rewritten for the sandboxed preview frame.

A real HTML tokenizer (stdlib ``html.parser``) walks the sender's HTML and writes it
back with four changes. The frame's safety rests on its sandbox and its
Content-Security-Policy, save for one thing neither covers: ``<link rel=preconnect>``
(and ``dns-prefetch``) makes Chromium connect out, so ``<link>`` never gets through.

- ``cid:`` references point at our own inline-image endpoint, for attachments that
  are safe raster images; any other ``cid:`` is dropped.
- Remote images (``src``/``srcset``/``background``/``poster``, the ``href`` of SVG's
  ``<image>``/``<use>``/``<feImage>``, and CSS ``url()``, ``image-set()`` and
  ``@import`` however escaped, see ``_css``; http(s), or a scheme-relative ``//host``
  with slashes or backslashes) are counted, and unless loading them was asked for they
  are moved to ``data-blocked-*`` attributes or replaced by ``about:invalid``, so not
  even a CSP bug could fetch them.
- Links open in a new tab through our warning page; ``javascript:``, ``data:`` and
  every other scheme but http(s) and mailto lose their ``href``.
- The sender's ``<base>``, ``<link>`` and ``<meta http-equiv="refresh">`` are dropped,
  and ours, ``<base target="_blank">``, comes first: a link the tokenizer saw
  differently from the browser still leaves the admin's frame. Comments, CDATA and
  processing instructions are dropped too: a browser may end one elsewhere than this
  tokenizer does, and what it took for their text would be live markup.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

from django_inbound_smtp.admin import _css

__all__ = ["Preview", "external_target", "rewrite"]

# Browsers drop these from URLs before looking at the scheme ("java\tscript:").
_URL_NOISE = re.compile(r"[\t\n\r]")
# What a browser fetches from another host: http(s) with or without its slashes
# ("http:host/x" from an https page), and scheme-relative URLs, whose slashes may be
# backslashes ("\\\\host", "/\\host": the URL standard reads them as "//").
_REMOTE = re.compile(r"^(?:https?:|[/\\]{2})", re.IGNORECASE)
_C0_AND_SPACE = "".join(map(chr, range(0x21)))
# Names we write back; anything else (quotes, "<" in a name) is not written at all.
_NAME = re.compile(r"^[a-zA-Z_:][-a-zA-Z0-9_:.]*$")
_LINKABLE = frozenset({"http", "https", "mailto"})
# Elements the sender may not have: they would steer where our rewritten URLs go
# (<base href>) or navigate the frame by themselves (refresh).
_DROPPED_META = frozenset({"refresh", "set-cookie"})
# <link> fetches or connects (rel=preconnect/dns-prefetch) outside CSP's reach, and a
# mail body has no use for it: its stylesheets would be refused anyway.
_DROPPED_TAGS = frozenset({"base", "link"})


@dataclass(frozen=True)
class Preview:
    """The rewritten HTML and what was found in it."""

    html: str
    remote_images: int
    inline_images: int


def _clean_url(value: str) -> str:
    return _URL_NOISE.sub("", value).strip(_C0_AND_SPACE)


def _is_remote(value: str) -> bool:
    return _REMOTE.match(_clean_url(value)) is not None


def external_target(value: str) -> str | None:
    """The URL a link may lead to (http, https or mailto), or ``None`` if it may not.

    Scheme-relative ``//host/path`` becomes ``https://host/path``; relative URLs and
    every other scheme (``javascript:``, ``data:``, ``file:`` ...) are refused.
    """
    url = _clean_url(value)
    if url.startswith("//"):
        url = "https:" + url
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in _LINKABLE:
        return None
    if parts.scheme.lower() != "mailto" and not parts.netloc:
        return None
    return url


def _content_id(value: str) -> str | None:
    url = _clean_url(value)
    if url[:4].lower() != "cid:":
        return None
    # RFC 2392: the cid URL is the %-encoded Content-ID; some senders keep the <>.
    return unquote(url[4:]).strip().removeprefix("<").removesuffix(">")


class _Rewriter(HTMLParser):
    def __init__(
        self,
        *,
        image_url: Callable[[str], str | None],
        link_url: Callable[[str], str],
        allow_remote: bool,
    ) -> None:
        super().__init__(convert_charrefs=True)
        self._image_url = image_url
        self._link_url = link_url
        self._allow_remote = allow_remote
        self._out: list[str] = []
        self._base_written = False
        self.remote_images = 0
        self.inline_images = 0

    def _base(self) -> None:
        if not self._base_written:
            self._base_written = True
            self._out.append('<base target="_blank">')

    def _css(self, text: str) -> str:
        rewritten, found = _css.neutralise(text, is_remote=_is_remote, block=not self._allow_remote)
        self.remote_images += found
        return rewritten

    def _image_source(self, attrs: dict[str, str | None], name: str) -> None:
        value = attrs.get(name)
        if value is None:
            return
        if name == "srcset":
            self._srcset(attrs, value)
            return
        content_id = _content_id(value)
        if content_id is not None:
            url = self._image_url(content_id)
            if url is None:
                del attrs[name]
            else:
                attrs[name] = url
                self.inline_images += 1
        elif _is_remote(value):
            self.remote_images += 1
            if not self._allow_remote:
                attrs[f"data-blocked-{name}"] = attrs.pop(name)

    def _srcset(self, attrs: dict[str, str | None], value: str) -> None:
        # "url 1x, url 2x": one image, whatever the number of candidates.
        urls = [_clean_url(candidate).split(" ")[0] for candidate in value.split(",")]
        if any(url[:4].lower() == "cid:" for url in urls):
            del attrs["srcset"]
        elif any(_is_remote(url) for url in urls):
            self.remote_images += 1
            if not self._allow_remote:
                attrs["data-blocked-srcset"] = attrs.pop("srcset")

    def _link(self, attrs: dict[str, str | None]) -> None:
        for name in ("href", "xlink:href"):
            value = attrs.pop(name, None)
            if value is None:
                continue
            if _clean_url(value).startswith("#"):
                # Within the document: harmless, and it stays in the frame.
                attrs[name] = value
                attrs["target"] = "_self"
                continue
            target = external_target(value)
            if target is not None:
                attrs[name] = self._link_url(target)
                attrs["target"] = "_blank"
                attrs["rel"] = "noopener noreferrer"

    def _attributes(self, tag: str, pairs: list[tuple[str, str | None]]) -> str | None:
        attrs: dict[str, str | None] = {}
        for name, value in pairs:
            if _NAME.match(name):
                attrs.setdefault(name, value)  # the first of duplicates wins, as in browsers
        if tag in _DROPPED_TAGS or not _NAME.match(tag):
            return None
        if tag == "meta" and (attrs.get("http-equiv") or "").strip().lower() in _DROPPED_META:
            return None
        attrs.pop("target", None)
        for name in ("src", "srcset", "background", "poster"):
            self._image_source(attrs, name)
        if tag in {"a", "area"}:
            self._link(attrs)
        else:
            # SVG's <image>, <use>, <feImage>... fetch what href names: an image
            # source, save a reference within the document ("#id").
            for name in ("href", "xlink:href"):
                if not _clean_url(attrs.get(name) or "#").startswith("#"):
                    self._image_source(attrs, name)
        if attrs.get("style"):
            attrs["style"] = self._css(attrs["style"] or "")
        return "".join(
            f" {name}" if value is None else f' {name}="{escape(value)}"'
            for name, value in attrs.items()
        )

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._base()
        rendered = self._attributes(tag, attrs)
        if rendered is not None:
            self._out.append(f"<{tag}{rendered}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._base()
        rendered = self._attributes(tag, attrs)
        if rendered is not None:
            self._out.append(f"<{tag}{rendered} />")

    def handle_endtag(self, tag: str) -> None:
        self._base()
        if tag not in _DROPPED_TAGS and _NAME.match(tag):
            self._out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if getattr(self, "cdata_elem", None) is not None:
            # Raw text of <style> (or <script>): written back as is, never escaped,
            # unless it holds an end tag this tokenizer did not take for one
            # ("</style x>") and a browser would: then it goes, or what follows would
            # be live markup we never looked at.
            if "</" not in data:
                self._out.append(self._css(data))
            return
        if data.strip():
            self._base()
        self._out.append(escape(data, quote=False))

    # Comments, CDATA sections and processing instructions are dropped: they show
    # nothing, and where this tokenizer ends one is not always where a browser does
    # ("<!-->" is a whole comment to a browser; "<![CDATA[" ends at the first ">").
    def handle_comment(self, data: str) -> None:
        return

    def handle_decl(self, decl: str) -> None:
        # <!DOCTYPE> first, then our <base>: before it the page would be in quirks mode.
        self._out.append(f"<!{decl}>")
        self._base()

    def unknown_decl(self, data: str) -> None:
        return

    def handle_pi(self, data: str) -> None:
        return

    def result(self) -> str:
        self._base()
        return "".join(self._out)


def rewrite(
    html: str,
    *,
    image_url: Callable[[str], str | None],
    link_url: Callable[[str], str],
    allow_remote: bool = False,
) -> Preview:
    """Rewrite the sender's ``html`` for the preview frame (see the module docstring).

    ``image_url(content_id)`` gives our URL for an inline image or ``None`` (not served
    inline); ``link_url(target)`` gives the warning-page URL for an external target.
    """
    rewriter = _Rewriter(image_url=image_url, link_url=link_url, allow_remote=allow_remote)
    rewriter.feed(html)
    rewriter.close()
    return Preview(
        html=rewriter.result(),
        remote_images=rewriter.remote_images,
        inline_images=rewriter.inline_images,
    )
