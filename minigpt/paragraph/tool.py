"""`write_paragraph`: the image-to-paragraph writing step as a tool, so that a template
(templates/image_to_paragraph.yaml) can chain the stages' tools and end with the paragraph."""
from __future__ import annotations

from minigpt.paragraph.facts import STAGES, region_facts, segment_facts
from minigpt.paragraph.pipeline import StageOutputs, write_paragraph
from minigpt.agents.tool import BOX, IMAGE, Tool, ToolContext, ToolError
from minigpt.paragraph.writers import TemplateWriter, Writer

OBJECT = {"type": "object", "properties": {"phrase": {"type": "string"}, "box": BOX}, "required": ["box"]}
SEGMENT = {"type": "object", "properties": {"color": {"type": "string"}, "position": {"type": "string"}, "box": BOX},
           "required": ["color", "position", "box"]}


def write_paragraph_tool(writer: Writer | None = None) -> Tool:
    writer = writer or TemplateWriter()

    def run(context: ToolContext, arguments: dict) -> dict:
        image = context.image(arguments["image"])
        height, width = image.shape[:2]
        objects = arguments.get("objects", [])
        details = [result.get("text") for result in arguments.get("details", [])] or None
        if details is not None and len(details) != len(objects):
            raise ToolError(f"details gives {len(details)} captions for {len(objects)} objects: one per object, in order")
        outputs = StageOutputs(caption=arguments.get("caption"), regions=region_facts(objects, width, height, details),
                               segments=segment_facts(arguments.get("segments", [])), width=width, height=height)
        paragraph, grounded, facts, _ = write_paragraph(outputs, STAGES, writer, image)
        return {"paragraph": paragraph, "grounded": grounded, "facts": [fact.as_dict() for fact in facts]}

    parameters = {"type": "object", "additionalProperties": False, "required": ["image"], "properties": {
        "image": IMAGE, "caption": {"type": "string"}, "objects": {"type": "array", "items": OBJECT},
        "details": {"type": "array", "items": {"type": "object"}, "description": "each object's crop caption result"},
        "segments": {"type": "array", "items": SEGMENT}}}
    result = {"type": "object", "required": ["paragraph", "grounded", "facts"], "properties": {
        "paragraph": {"type": "string"}, "grounded": {"type": "string"}, "facts": {"type": "array"}}}
    return Tool("write_paragraph", "Write one paragraph about the image from a caption, regions (phrases with "
                "boxes, each optionally captioned) and colour segments; also the paragraph with each object's box.",
                parameters, run, result)
