"""Our prompt format as a Jinja chat template, for the tokenizer of an exported transformers folder.

`tokenizer.apply_chat_template(messages, add_generation_prompt=True)` then writes the text our collator
writes for a generation prompt, with `image_text` (the image tokens) where we put the image embeddings:

  training template   <s>###Human: <Img>{image_text}</Img> What color is it? ###Assistant:
  a chat style        <s>Give the following image: ...###Human: <Img>{image_text}</Img> Q###Assistant:

Messages follow the transformers convention: `content` is a string or a list of parts, where a
{"type": "image"} part says the conversation has an image (our format puts it in the first user turn)
and {"type": "text", "text": ...} parts are joined. MiniGPT-v2's task identifier is part of the text
("[vqa] What color is it?"). A system message is refused: our prompts have none of their own.

Tokenized by the exported tokenizer, which prefixes every piece between special tokens with a word
start as our collator does (it tokenizes each piece on its own), a one-turn prompt gives our token ids
exactly. In later turns an answer joins the text after it into one piece, where we tokenize them apart,
so a multi-turn history can differ from ours by a token at each such seam.
"""
from __future__ import annotations

import json

from minigpt.conversation.chat_styles import ChatStyle
from minigpt.conversation.template import IMAGE_PLACEHOLDER, IMAGE_PROMPT, PromptTemplate

# Sets `text` (the message's text parts joined) and `ns.image` (whether any message has an image part).
READ_MESSAGES = """\
{%- set ns = namespace(image=false, first_user=true) -%}
{%- for message in messages -%}
  {%- if message.content is not string -%}
    {%- for part in message.content -%}{%- if part.type == 'image' -%}{%- set ns.image = true -%}{%- endif -%}{%- endfor -%}
  {%- endif -%}
{%- endfor -%}
{{- bos_token -}}
"""
MESSAGE_TEXT = """\
  {%- if message.role == 'system' -%}{{- raise_exception('system messages are not part of this prompt format') -}}{%- endif -%}
  {%- if message.content is string -%}{%- set text = message.content -%}
  {%- else -%}{%- set text = message.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}
  {%- endif -%}
  {%- if message.role == 'user' and ns.first_user and ns.image -%}
    {%- set text = IMAGE_PROMPT ~ (' ' ~ text if text else '') -%}
  {%- endif -%}
  {%- if message.role == 'user' -%}{%- set ns.first_user = false -%}{%- endif -%}
"""


def _literal(text: str) -> str:
    """A Jinja string literal."""
    return json.dumps(text, ensure_ascii=False)


# For an LLM's own chat template (prompt_template: auto): messages rewritten as our collator writes them
# (text parts joined, the image prompt before the first user turn's text, the configured system prompt
# when the conversation has none), then handed to that template unchanged.
REWRITE_MESSAGES = """\
{%- set ns = namespace(image=false, first_user=true, system=false, rewritten=[]) -%}
{%- for message in messages -%}
  {%- if message.role == 'system' -%}{%- set ns.system = true -%}{%- endif -%}
  {%- if message.content is not string -%}
    {%- for part in message.content -%}{%- if part.type == 'image' -%}{%- set ns.image = true -%}{%- endif -%}{%- endfor -%}
  {%- endif -%}
{%- endfor -%}
{%- if SYSTEM_PROMPT and not ns.system -%}{%- set ns.rewritten = [{'role': 'system', 'content': SYSTEM_PROMPT}] -%}{%- endif -%}
{%- for message in messages -%}
  {%- if message.content is string -%}{%- set text = message.content -%}
  {%- else -%}{%- set text = message.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}
  {%- endif -%}
  {%- if message.role == 'user' and ns.first_user and ns.image -%}
    {%- set text = IMAGE_PROMPT ~ (' ' ~ text if text else '') -%}
  {%- endif -%}
  {%- if message.role == 'user' -%}{%- set ns.first_user = false -%}{%- endif -%}
  {%- set ns.rewritten = ns.rewritten + [{'role': message.role, 'content': text}] -%}
{%- endfor -%}
{%- set messages = ns.rewritten -%}
"""


def jinja_chat_template(template: PromptTemplate, image_text: str) -> str:
    """The chat template of `template` (its chat style when it has one, or the LLM's own template it was
    built from), `image_text` in the image slot."""
    image_prompt = IMAGE_PROMPT.replace(IMAGE_PLACEHOLDER, image_text)
    if template.chat_template is not None:
        own = template.chat_template
        return ("{%- set IMAGE_PROMPT = " + _literal(image_prompt) + " -%}\n"
                "{%- set SYSTEM_PROMPT = " + _literal(own.system_prompt) + " -%}\n"
                + REWRITE_MESSAGES + own.tokenizer.chat_template)
    header = READ_MESSAGES + "{%- set IMAGE_PROMPT = " + _literal(image_prompt) + " -%}\n"
    loop = "{%- for message in messages -%}\n" + MESSAGE_TEXT
    if template.chat_style is not None:
        return header + _style_body(template.chat_style, loop)
    prefix, _, suffix = (template.prompt_template or "{}").partition("{}")
    return header + loop + (
        "  {%- if message.role == 'user' -%}\n"
        "    {%- if not loop.first -%}{{- bos_token -}}{%- endif -%}\n"  # MiniGPT-4 starts every user turn with BOS
        f"    {{{{- {_literal(prefix)} ~ text ~ (({_literal(template.instruction_suffix)}) if ns.image else '')"
        f" ~ {_literal(suffix)} -}}}}\n"
        f"  {{%- else -%}}{{{{- text ~ {_literal(template.end_sym)} -}}}}\n"
        "  {%- endif -%}\n"
        "{%- endfor -%}\n")


def _style_body(style: ChatStyle, loop: str) -> str:
    """An original demo's `Conversation`: system + sep, each message as role + text + sep, then the
    assistant role alone for the answer to come."""
    return (f"{{{{- {_literal(style.system + style.sep)} -}}}}\n" + loop +
            f"  {{%- set role = {_literal(style.user_role)} if message.role == 'user' "
            f"else {_literal(style.assistant_role)} -%}}\n"
            f"  {{{{- role ~ text ~ {_literal(style.sep)} -}}}}\n"
            "{%- endfor -%}\n"
            f"{{%- if add_generation_prompt -%}}{{{{- {_literal(style.assistant_role)} -}}}}{{%- endif -%}}\n")
