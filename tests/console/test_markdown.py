"""The playground's markdown preview: the channel's subset rendered, and nothing else, ever."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.channels.dingtalk import MARKDOWN as DINGTALK
from bridge.channels.markdown import neutralize
from bridge.channels.wechat import MARKDOWN as WECHAT
from bridge.channels.wechat import MARKDOWN_V2 as WECHAT_V2
from sheepdog.console.markdown import nearest_color, to_html
from tests.support.fuzzing import examples

ALLOWED_TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "span", "a", "ul", "ol", "li",
    "div", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"class", "href", "rel"}


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def elements(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


def test_wechat_markdown_renders_its_subset() -> None:
    """Headings, bold, quotes, links, code, the three named colours and mentions."""
    html = to_html(
        '## 🔥 <font color="warning">FIRING</font> Disk\n'
        "> **host-1** at [Graph](http://prometheus:9090/graph) `up == 0`\n"
        '<font color="info">ok</font> <font color="comment">note</font> <@zhangsan>',
        WECHAT,
    )
    assert '<p class="md-h md-h2">🔥 <span class="md-orange">FIRING</span> Disk</p>' in html
    assert "<blockquote><strong>host-1</strong> at " in html
    assert (
        '<a href="http://prometheus:9090/graph" rel="noopener noreferrer nofollow">Graph</a>'
        in html
    )
    assert "<code>up == 0</code>" in html
    assert '<span class="md-green">ok</span>' in html
    assert '<span class="md-grey">note</span>' in html
    assert '<span class="md-mention">@zhangsan</span>' in html


def test_what_the_client_does_not_render_is_shown_as_written() -> None:
    """Plain WeChat markdown has no tables, lists, code blocks or images; DingTalk no mentions."""
    text = "| a | b |\n|---|---|\n| 1 | 2 |\n- item\n![x](http://img/x.png)"
    html = to_html(text, WECHAT)
    assert "<table" not in html and "<li>" not in html and "md-image" not in html
    assert "| a | b |" in html and "![x](http://img/x.png)" in html
    v2 = to_html(text, WECHAT_V2)
    assert "<table>" in v2 and "<li>item</li>" in v2 and 'class="md-image"' in v2
    assert "md-mention" not in to_html("<@zhangsan>", DINGTALK)


def test_dingtalk_hex_colours_become_the_nearest_palette_class() -> None:
    assert '<span class="md-red">x</span>' in to_html("<font color=#E01E5A>x</font>", DINGTALK)
    assert nearest_color("#2EB67D") == "green"
    assert nearest_color("not a colour") == "grey"


def test_links_open_only_http_and_images_are_never_loaded() -> None:
    html = to_html(
        "[a](javascript:alert(1)) [b](javascript:void) [c](data:text/html,x) [d](https://ok/x)\n"
        "![pixel](https://tracker.example/p.gif)",
        WECHAT_V2,
    )
    hrefs = [attrs["href"] for tag, attrs in elements(html).tags if tag == "a"]
    assert hrefs == ["https://ok/x", "https://tracker.example/p.gif"]
    assert "<img" not in html


def test_neutralized_alert_text_stays_inert_as_in_the_client() -> None:
    """What the bridge printed of alert text (a zero-width space after <, between ] and ()
    is no mention, tag or link in the preview either."""
    text = neutralize('<@all> <font color="warning">x</font> [click](http://evil) <b>bold</b>')
    parsed = elements(to_html(text, WECHAT))
    assert [tag for tag, _ in parsed.tags] == ["p"]


FRAGMENTS = [
    '<font color="warning">', "<font color=#E01E5A>", "<font color='x' onclick='y'>", "</font>",
    "**", "*", "`", "[", "](", ")", "http://x/", "https://y/?a=1&b=2", "javascript:", "![",
    "<@", "<@zhang san>", ">", "\n", "\n> ", "\n- ", "\n1. ", "\n| a | b |\n|---|---|\n",
    "```\n", "<script>", "</script>", '" onmouseover="x', "&lt;", "&#60;", "## ", "\u200b",
]  # fmt: skip
TEXT = st.text(alphabet=st.sampled_from(list("<>[]()!*`#|-_=\"' \n\\/:@&;abx1")), max_size=8)


@settings(max_examples=examples(400))
@given(st.lists(st.sampled_from(FRAGMENTS) | TEXT, max_size=40).map("".join))
def test_any_text_makes_only_our_own_tags(text: str) -> None:
    """Whatever a payload makes of the message, the preview holds only the few tags and
    attributes it makes itself, and every href is http(s)."""
    for subset in (WECHAT, WECHAT_V2, DINGTALK):
        parsed = elements(to_html(text, subset))
        for tag, attrs in parsed.tags:
            assert tag in ALLOWED_TAGS, (tag, text)
            assert set(attrs) <= ALLOWED_ATTRIBUTES, (attrs, text)
            if tag == "a":
                assert re.match(r"^https?://", attrs["href"] or ""), (attrs, text)
