"""Write the synthetic shapes set: captions, questions and grounding about coloured shapes.
What it writes, and its options (--help): minigpt/synthetic/shapes.py.

    python dataset/synthetic_shapes.py --out data/shapes --seed 0
"""
from minigpt.synthetic.shapes import main

if __name__ == "__main__":
    main()
