"""The MCP server end to end: a real client starts `minigpt mcp` as a subprocess and talks to it over stdio.

One session (the server takes a few seconds to import) makes every call; the tests then read its answers.
"""
import base64
import io
import json
import sys

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from PIL import Image
from skimage import data

from conftest import REPO

pytestmark = pytest.mark.slow  # a server process that imports torch: about 17 s

# `minigpt mcp` without depending on the command being registered in cli/main.py
LAUNCHER = ("import argparse, sys; from minigpt.cli import mcp; parser = argparse.ArgumentParser(); "
            "mcp.add_arguments(parser); sys.exit(mcp.run(parser.parse_args()))")
OUTSIDE = [400, 400, 600, 600]  # the astronaut is 512x512


async def talk_to_server(photo: str, folder: str, log) -> dict:
    """Every request of the tests, in one session; the answers by what was asked."""
    server = StdioServerParameters(command=sys.executable, args=["-c", LAUNCHER, "--out", folder], cwd=str(REPO))
    answers = {}
    with anyio.fail_after(60):
        async with stdio_client(server, errlog=log) as (read_stream, write_stream):
            async with ClientSession(read_stream, write_stream) as session:
                answers["initialize"] = await session.initialize()
                answers["tools"] = {tool.name: tool for tool in (await session.list_tools()).tools}
                answers["opened"] = await session.call_tool("open_image", {"path": photo})
                handle = answers["opened"].structured_content["image"]
                answers["blurred"] = await session.call_tool("blur_faces", {"image": handle})
                answers["crop_outside"] = await session.call_tool("crop", {"image": handle, "box": OUTSIDE})
                answers["unknown_tool"] = await session.call_tool("no_such_tool", {})
                answers["missing_file"] = await session.call_tool("open_image", {"path": f"{folder}/missing.png"})
                answers["crop_after_errors"] = await session.call_tool("crop", {"image": handle, "box": [0, 0, 8, 8]})
    return answers


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("mcp")
    photo = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    with open(folder / "server.log", "w") as log:
        try:
            return anyio.run(talk_to_server, str(photo), str(folder / "session"), log)
        except BaseException:
            log.flush()
            print((folder / "server.log").read_text()[-3000:])  # shown by pytest with the failure
            raise


def text_of(result) -> str:
    return "".join(block.text for block in result.content if block.type == "text")


def images_of(result) -> list:
    return [block for block in result.content if block.type == "image"]


def test_lists_the_tools_the_templates_and_open_image_with_their_schemas(answers):
    tools = answers["tools"]
    assert {"face_detect", "crop", "find_color_regions", "blur_faces", "open_image"} <= set(tools)
    assert "caption" not in tools  # model tools need --cfg-path
    for name in ("face_detect", "crop", "blur_faces", "open_image"):
        assert tools[name].description and tools[name].input_schema["type"] == "object"
    assert tools["crop"].input_schema["required"] == ["image", "box"]
    assert tools["open_image"].input_schema["properties"]["path"]["type"] == "string"
    assert answers["initialize"].instructions and "open_image" in answers["initialize"].instructions


def test_open_image_gives_a_handle_and_shows_the_image(answers):
    opened = answers["opened"]
    assert not opened.is_error
    assert json.loads(text_of(opened)) == {"image": "img_0", "width": 512, "height": 512}
    assert len(images_of(opened)) == 1


def test_blur_faces_gives_its_result_as_json_and_the_blurred_image(answers):
    blurred = answers["blurred"]
    assert not blurred.is_error, text_of(blurred)
    result = json.loads(text_of(blurred))
    assert result["faces"] == 1 and result["image"] != "img_0"
    [image] = images_of(blurred)
    assert image.mime_type == "image/png"
    assert Image.open(io.BytesIO(base64.b64decode(image.data))).size == (512, 512)


def test_failures_come_back_as_error_results_and_the_server_goes_on(answers):
    crop = answers["crop_outside"]
    assert crop.is_error and "box [400, 400, 600, 600] is not inside the 512x512 image" in text_of(crop)
    unknown = answers["unknown_tool"]
    assert unknown.is_error and "unknown tool 'no_such_tool'" in text_of(unknown)
    missing = answers["missing_file"]
    assert missing.is_error and "missing.png: not a readable image file" in text_of(missing)
    assert not answers["crop_after_errors"].is_error
