"""Synthetic data sets a tiny model can learn offline, with nothing downloaded: shapes (the quick start),
fine patterns, faces, tool use, paragraph scenes, and a small example of every annotation layout.

Each module writes its set from a seed (`generate`, or `write_examples`) and is run as a script from
dataset/ (`python dataset/synthetic_shapes.py --out data/shapes`); the tests and the benchmarks import
them. They build on the layers below (tokenizer, box tokens, the agent's tools, the paragraph pipeline),
so they sit beside the runners, above every part they draw on.
"""
