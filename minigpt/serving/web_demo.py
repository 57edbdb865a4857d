"""The browser chat (Gradio) over the chat engine: one conversation per browser tab.

Upload an image, ask, follow up; Reset starts over. Answers stream in as they are generated. For
MiniGPT-v2 the task selector puts its identifier ("[refer] ...") before the question, and the boxes an
answer names are drawn on the image with their labels. The model answers one request at a time; the
rest wait in Gradio's queue. Gradio is the `web` extra, imported when the page is built.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image

from minigpt.common.errors import MissingExtraError
from minigpt.conversation.boxes import draw_boxes, parse_boxes
from minigpt.inference.chat import GenerationOptions, generate_answers, load_image, stream_answer
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.serving.web_agent import AgentTab

TASKS = ("none", "vqa", "caption", "refer", "identify", "grounding", "detection")


@dataclass
class Session:
    """One browser tab's conversation: plain data, so Gradio can copy it per tab."""

    image: Image.Image | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)


class WebChat:
    """The demo's callbacks over one loaded model."""

    def __init__(self, model, image_processor, max_image_mb: float):
        self.model, self.image_processor = model, image_processor
        self.collator = collator_for(model)
        self.max_image_bytes = int(max_image_mb * 2**20)

    def upload(self, path: str | None) -> tuple[Session, Image.Image | None, list, str]:
        """A new image starts a new conversation; an unreadable or oversized file gets a message instead."""
        if path is None:
            return Session(), None, [], ""
        size = Path(path).stat().st_size
        if size > self.max_image_bytes:
            return Session(), None, [], f"**That file is {size / 2**20:.1f} MB; the limit is {self.max_image_bytes / 2**20:.0f} MB.**"
        try:
            image = load_image(path)
        except ValueError:
            return Session(), None, [], f"**{Path(path).name} is not an image this demo can read.** Upload a JPEG, PNG or WebP file."
        return Session(image), image, [], "Image loaded. Ask about it."

    def ask(self, session: Session, question: str, task: str, beams: int, temperature: float,
            max_new_tokens: int) -> Iterator[tuple[Session, list, Image.Image | None, str, str]]:
        """Stream the answer into the chat; then draw the boxes it names on the image."""
        question = question.strip()
        if not question:
            yield session, messages(session.turns), session.image, "", "Type a question first."
            return
        if task != "none":
            question = f"[{task}] {question}"
        options = GenerationOptions(max_new_tokens=int(max_new_tokens), num_beams=int(beams), repetition_penalty=1.0,
                                    temperature=max(temperature, 1e-5), do_sample=temperature > 0)
        image = self.image_processor(session.image) if session.image is not None else None
        sample = {"id": "web", "image": image, "turns": session.turns + [(USER, question)]}
        answer = ""
        try:
            if options.num_beams > 1:  # beam search cannot stream: the answer comes whole
                answer = generate_answers(self.model, self.collator, [sample], options)[0]
            else:
                for piece in stream_answer(self.model, self.collator, sample, options):
                    answer += piece
                    yield session, messages(session.turns + [(USER, question), (ASSISTANT, answer)]), session.image, "", ""
        except ValueError as error:  # for example a conversation longer than the model's context
            yield session, messages(session.turns), session.image, question, f"**{error}**"
            return
        session = Session(session.image, session.turns + [(USER, question), (ASSISTANT, answer)])
        shown, note = session.image, ""
        if session.image is not None:
            boxes = parse_boxes(answer, *session.image.size)
            if boxes.boxes:
                shown = draw_boxes(session.image, boxes.boxes)
                note = f"{len(boxes.boxes)} box(es) drawn on the image."
            if boxes.problems:
                note += " Could not read: " + "; ".join(boxes.problems)
        yield session, messages(session.turns), shown, "", note

    def reset(self, session: Session) -> tuple[Session, list, Image.Image | None, str]:
        return Session(session.image), [], session.image, "Conversation cleared."


def messages(turns: list[tuple[str, str]]) -> list[dict]:
    """Our turns as Gradio's chat messages."""
    return [{"role": "user" if role == USER else "assistant", "content": text} for role, text in turns]


def check_gradio() -> None:
    """Before a model loads for the web page: Gradio is the web extra's (imported by build_ui alone, as it takes
    seconds to import and every other command does without it)."""
    if importlib.util.find_spec("gradio") is None:
        raise MissingExtraError("minigpt web", "gradio", "web")


def build_ui(web: WebChat, title: str, agent: AgentTab | None = None):
    check_gradio()
    import gradio as gr
    with gr.Blocks(title=title) as ui:
        gr.Markdown(f"## {title}\nUpload an image, then ask about it.")
        with gr.Tab("Chat"):
            chat_tab(gr, web)
        if agent is not None:
            with gr.Tab("Tools"):
                tools_tab(gr, agent)
    return ui


def chat_tab(gr, web: WebChat) -> None:
    session = gr.State(Session())
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="Image", file_types=["image"], elem_id="upload")
            shown = gr.Image(label="The image (with the answer's boxes)", type="pil", interactive=False,
                             height=280, elem_id="shown")
            task = gr.Dropdown(list(TASKS), value="none", label="Task identifier (MiniGPT-v2)")
            beams = gr.Slider(1, 5, value=1, step=1, label="Beams")
            temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.1, label="Temperature (0: greedy)")
            max_new_tokens = gr.Slider(8, 512, value=128, step=8, label="Max new tokens")
        with gr.Column(scale=2):
            chatbot = gr.Chatbot(label="Chat", elem_id="chat", height=420)
            question = gr.Textbox(label="Question", placeholder="Which colors do you see?", elem_id="question")
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="send")
                reset = gr.Button("Reset", elem_id="reset")
            status = gr.Markdown(elem_id="status")
    upload.change(web.upload, upload, [session, shown, chatbot, status])
    ask_inputs = [session, question, task, beams, temperature, max_new_tokens]
    ask_outputs = [session, chatbot, shown, question, status]
    send.click(web.ask, ask_inputs, ask_outputs)
    question.submit(web.ask, ask_inputs, ask_outputs)
    reset.click(web.reset, session, [session, chatbot, shown, status])


def tools_tab(gr, agent: AgentTab) -> None:
    """A template or one tool on an image; each step's image in the gallery, the steps listed below."""
    choices = agent.choices()
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="Image", type="filepath", elem_id="tool_image")
            choice = gr.Dropdown(choices, value=choices[0] if choices else None, label="Template or tool")
            arguments = gr.Textbox(label="Arguments (JSON)", value="{}", placeholder='{"object": "the red car"}')
            run = gr.Button("Run", variant="primary", elem_id="tool_run")
        with gr.Column(scale=2):
            steps_gallery = gr.Gallery(label="Each step's image", columns=3, height=360, elem_id="tool_gallery")
            steps = gr.Markdown(elem_id="tool_steps")
    run.click(agent.run, [image, choice, arguments], [steps_gallery, steps])
