"""Serve a model behind an OpenAI-compatible API: POST /v1/chat/completions, GET /v1/models.

    python serve.py --cfg-path eval_configs/X.yaml [--port 8000] [--options key=value ...]

Any OpenAI client then talks to it, for example:

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="minigpt", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}]}])

Images come as data URLs, or as file paths under --image-root. It listens on 127.0.0.1 unless --host
says otherwise; there is no authentication, so expose it only behind something that has.
"""
import argparse
from pathlib import Path

from minigpt.models.inference import add_model_arguments, image_processor_for, load_from_arguments
from minigpt.serving.openai_api import ServedModel, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", help="the model name the API reports (default: the config file's name)")
    parser.add_argument("--image-root", default=".", help="image paths in requests must lie under this folder")
    args = parser.parse_args()

    import uvicorn

    config, model = load_from_arguments(args)
    served = ServedModel(args.name or Path(args.cfg_path).stem, model, image_processor_for(config),
                         Path(args.image_root), int(args.max_image_mb * 2**20))
    uvicorn.run(create_app(served), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
