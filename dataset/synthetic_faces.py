"""Write drawn faces with sectioned annotations.
What it writes, and its options (--help): minigpt/synthetic/faces.py.

    python dataset/synthetic_faces.py --out data/faces --seed 0
"""
from minigpt.synthetic.faces import main

if __name__ == "__main__":
    main()
