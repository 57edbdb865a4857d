"""Write a small example of every annotation layout the builders read.
What it writes, and its options (--help): minigpt/synthetic/example_formats.py.

    python dataset/example_formats.py --out data/formats --images 20
"""
from minigpt.synthetic.example_formats import main

if __name__ == "__main__":
    main()
