"""Write scenes for image-to-paragraph and their held-out gallery.
What it writes, and its options (--help): minigpt/synthetic/paragraphs.py.

    python dataset/synthetic_paragraphs.py --out data/paragraphs --seed 0
"""
from minigpt.synthetic.paragraphs import main

if __name__ == "__main__":
    main()
