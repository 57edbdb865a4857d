"""The agent's tools and templates as an MCP server over stdio, so that MCP clients plan with them themselves.

A client such as Claude Desktop launches `minigpt mcp [--cfg-path X]` as a subprocess (in claude_desktop_config.json:
{"mcpServers": {"minigpt": {"command": "minigpt", "args": ["mcp"]}}}) and then needs no planner of ours. Clients
cannot hand us image handles, so `open_image` brings a local file in as one; a result that names an image brings that
image back as a PNG beside the result's JSON, and a failed call comes back as an error result, never as a crash.
"""
from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import anyio
import anyio.to_thread
import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from PIL import Image

from minigpt import __version__
from minigpt.agents.images import ImageStore
from minigpt.agents.loading import AgentConfigError
from minigpt.agents.templates import offer_templates
from minigpt.agents.tool import IMAGE, Observation, Tool, Toolbox, ToolContext, ToolError

OPEN_IMAGE = "open_image"
INSTRUCTIONS = ("Tools name images by handle (img_0, img_1, ...): call open_image with a local file path first and "
                "pass the handle it returns to the other tools. Boxes are pixels [x1, y1, x2, y2]. A result that "
                "names an image comes with that image.")


def open_image_tool() -> Tool:
    """The one way in for a client's image: a path on this machine becomes a handle of the session."""
    def open_image(context: ToolContext, arguments: dict) -> dict:
        path = Path(arguments["path"]).expanduser()
        try:
            with Image.open(path) as image:
                handle = context.add_image(image, parent=None, tool=OPEN_IMAGE, arguments={"path": str(path)})
        except (OSError, ValueError, Image.DecompressionBombError) as error:  # missing, a folder, not an image
            raise ToolError(f"{path}: not a readable image file ({error})") from None
        height, width = context.image(handle).shape[:2]
        return {"image": handle, "width": width, "height": height}

    path = {"type": "string", "minLength": 1, "description": "an image file (PNG, JPEG, ...) on the server's machine"}
    size = {"type": "integer", "minimum": 1}
    return Tool(OPEN_IMAGE, "Open a local image file; gives the handle the other tools take, and its size in pixels.",
                {"type": "object", "properties": {"path": path}, "required": ["path"], "additionalProperties": False},
                open_image, {"type": "object", "properties": {"image": IMAGE, "width": size, "height": size},
                             "required": ["image", "width", "height"]})


def add_server_tools(toolbox: Toolbox) -> list[str]:
    """Give `toolbox` open_image and every shipped template whose tools are all loaded, so that one
    `Toolbox.call` validates, runs and logs any call; -> a line for each template left out, saying why."""
    if OPEN_IMAGE in toolbox.tools:
        raise AgentConfigError(f"the tool name {OPEN_IMAGE!r} is the MCP server's own; a user tool must pick another")
    toolbox.tools[OPEN_IMAGE] = open_image_tool()
    return offer_templates(toolbox)


def mcp_tool(tool: Tool) -> types.Tool:
    return types.Tool(name=tool.name, description=tool.description, input_schema=tool.parameters)


def call_result(observation: Observation, images: ImageStore) -> types.CallToolResult:
    """The result as JSON text (and structured content), plus the image it names as a PNG; an error as
    an error result with the observation's message, which tells the client what to change."""
    if not observation.ok:
        return types.CallToolResult(content=[types.TextContent(text=observation.error)], is_error=True)
    text = json.dumps(observation.result, ensure_ascii=False, default=str)
    content: list[types.ContentBlock] = [types.TextContent(text=text)]
    handle = observation.result.get("image")
    if isinstance(handle, str) and handle in images.handles:
        png = base64.b64encode(images.path(handle).read_bytes()).decode("ascii")
        content.append(types.ImageContent(data=png, mime_type="image/png"))
    return types.CallToolResult(content=content, structured_content=json.loads(text))


def create_server(toolbox: Toolbox) -> Server:
    """An MCP server over `toolbox` (add_server_tools first). Calls run one at a time, as the toolbox and its
    images are not made for concurrent calls, each in a worker thread so the connection keeps answering."""
    one_at_a_time = threading.Lock()

    def call(name: str, arguments: dict) -> Observation:
        with one_at_a_time:
            return toolbox.call(name, arguments)

    async def list_tools(context, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[mcp_tool(tool) for tool in toolbox.tools.values()])

    async def call_tool(context, params: types.CallToolRequestParams) -> types.CallToolResult:
        observation = await anyio.to_thread.run_sync(call, params.name, params.arguments or {})
        return call_result(observation, toolbox.images)

    return Server("minigpt", version=__version__, instructions=INSTRUCTIONS, on_list_tools=list_tools,
                  on_call_tool=call_tool)


def serve_stdio(toolbox: Toolbox) -> None:
    """Serve `toolbox` on stdin/stdout until the client closes the connection. While it serves, anything
    printed to stdout goes to stderr instead (the MCP SDK moves it), so tools cannot garble the messages."""
    server = create_server(toolbox)

    async def serve() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(serve)
