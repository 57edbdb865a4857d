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

import torch

from minigpt.common.config import load_config
from minigpt.models.inference import image_processor_for, load_for_inference, pick_device, report_peak_memory
from minigpt.serving.openai_api import ServedModel, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="eval config YAML")
    parser.add_argument("--options", nargs="+", default=[], help="config overrides: key=value")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", help="the model name the API reports (default: the config file's name)")
    parser.add_argument("--image-root", default=".", help="image paths in requests must lie under this folder")
    parser.add_argument("--max-image-mb", type=float, default=20, help="largest image accepted")
    parser.add_argument("--gpu-id", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is visible")
    parser.add_argument("--low-resource", action="store_true", default=None, help="LLM in 8-bit (or --bits 4)")
    parser.add_argument("--bits", type=int, choices=(8, 4))
    args = parser.parse_args()

    import uvicorn

    config = load_config(args.cfg_path, args.options, for_training=False)
    device = torch.device("cpu") if args.cpu else pick_device(args.gpu_id)
    torch.manual_seed(config.run.seed)  # parts without weights files: the same random weights as eval.py
    model = load_for_inference(config, device, low_resource=args.low_resource, bits=args.bits)
    report_peak_memory(device, "loading")
    served = ServedModel(args.name or Path(args.cfg_path).stem, model, image_processor_for(config),
                         Path(args.image_root), int(args.max_image_mb * 2**20))
    uvicorn.run(create_app(served), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
