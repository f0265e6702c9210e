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
