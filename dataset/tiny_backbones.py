"""Write tiny Qwen2 / Llama-3 style tokenizers and a tiny SigLIP tower beside a synthetic data set, for the
tiny configs of today's backbones (train_configs/tiny_qwen2_siglip.yaml, tiny_llama3_v2.yaml). Details: minigpt/synthetic/tiny_backbones.py.

    python dataset/tiny_backbones.py --data data/shapes
"""
from minigpt.synthetic.tiny_backbones import main

if __name__ == "__main__":
    main()
