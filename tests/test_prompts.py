"""Prompt rendering (cotpd.prompts): one pass, values never re-scanned, delimiter tags inside values
defused (prompt injection), a missing value named, the version a hash of the file."""
from __future__ import annotations

import pytest

from cotpd import prompts
from cotpd.errors import ConfigError

TEXT = """# a comment
[system]
You read <tweet> blocks about {topic}.
[user]
<tweet>
{text}
</tweet>
Relation of {head} to {tail}?"""


def test_render_substitutes_once_and_defuses_tags():
    p = prompts.parse("t", TEXT)
    assert p.placeholders == {"topic", "text", "head", "tail"}
    msgs = p.messages(topic="news", text="ends </TWEET > here {head} {x}", head="A", tail="<Head>B", extra="ignored")
    assert msgs[0] == {"role": "system", "content": "You read <tweet> blocks about news."}
    # the template's own tags stay; the value's closing tag is defused and its {head} is not a placeholder
    assert msgs[1]["content"] == "<tweet>\nends ‹/TWEET› here {head} {x}\n</tweet>\nRelation of A to ‹Head›B?"
    assert p.render("user", topic="", text=None, head=3, tail=1.5).startswith("<tweet>\n\n</tweet>\nRelation of 3 to 1.5")


def test_missing_value_is_named_and_version_follows_the_file():
    p = prompts.parse("t", TEXT)
    with pytest.raises(ConfigError, match=r"prompt 't' needs \['head', 'tail'\]"):
        p.render("user", text="x")
    assert p.version.startswith("t:") and p.version != prompts.parse("t", TEXT + " ").version
    with pytest.raises(ConfigError, match="no \\[user\\] section"):
        prompts.parse("t", "[system]\nonly")


def test_every_packaged_prompt_renders_with_its_own_placeholders():
    for names in prompts.COT_PROMPTS.values():
        for name in names.values():
            p = prompts.load(name)
            msgs = p.messages(**{k: f"<{k}>" for k in p.placeholders})
            assert msgs[-1]["role"] == "user" and "{" + next(iter(p.placeholders)) + "}" not in msgs[-1]["content"]


@pytest.mark.parametrize("text", [TEXT, TEXT.replace("[system]\nYou read <tweet> blocks about {topic}.\n", ""),
                                  "[system]\n100% {{topic}} {} {0} %s %(x)s {Topic}\n[user]\n{text}{text} }{ %%"])
def test_messages_render_as_render_does_on_tricky_values(text):
    """`messages` renders by %-formats made once (the replay's fast path); `render` joins the pieces:
    both give the same text for values holding braces, placeholders, % signs, tags, unicode, None."""
    p = prompts.parse("t", text)
    tricky = ["{text}", "{head} {x} {0} {} }{", "100% %s %(topic)s %%", "</tweet> <HEAD >x< /tail>", "é 中文 😀 \U0010ffff",
              "", None, 3, 1.5, "line\nbreak \\ \"q\"", "‹tweet›"]
    for i in range(len(tricky)):
        values = {n: tricky[(i + j) % len(tricky)] for j, n in enumerate(sorted(p.placeholders))}
        msgs = p.messages(**values, unused="{text}")
        assert [m["role"] for m in msgs] == (["system"] if p.system else []) + ["user"]
        assert [m["content"] for m in msgs] == [p.render(m["role"], **values) for m in msgs]
        assert p.messages_of(values) == msgs
    with pytest.raises(ConfigError, match=r"prompt 't' needs \['text'\]"):
        p.messages_of({n: "x" for n in p.placeholders if n != "text"})


def test_every_packaged_prompt_renders_alike_both_ways():
    for name in sorted({n for per_task in prompts.COT_PROMPTS.values() for n in per_task.values()}
                       | set(prompts.AUGMENT_PROMPTS) | set(prompts.CAPTION_PROMPTS)):
        p = prompts.load(name)
        values = {k: f"<{k}> {{text}} 50% ü" for k in p.placeholders}
        assert [m["content"] for m in p.messages(**values)] == \
            ([p.render("system", **values)] if p.system else []) + [p.render("user", **values)], name
