"""Write fine stripe patterns, legible only at full resolution.
What it writes, and its options (--help): minigpt/synthetic/patterns.py.

    python dataset/synthetic_patterns.py --out data/patterns --seed 0
"""
from minigpt.synthetic.patterns import main

if __name__ == "__main__":
    main()
