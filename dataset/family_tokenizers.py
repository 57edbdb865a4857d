"""Write a tokenizer in the style of an LLM family (qwen2, llama, mistral, gemma2, phi3), with its chat
template, trained on a data set's text. What it writes, and its options (--help):
minigpt/synthetic/family_tokenizers.py.

    python dataset/family_tokenizers.py --family qwen2 --corpus data/shapes/train.json --out data/shapes/tokenizer-qwen2
"""
from minigpt.synthetic.family_tokenizers import main

if __name__ == "__main__":
    main()
