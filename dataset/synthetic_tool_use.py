"""Write requests about shapes images answered with tool calls.
What it writes, and its options (--help): minigpt/synthetic/tool_use.py.

    python dataset/synthetic_tool_use.py --out data/tools --seed 0
"""
from minigpt.synthetic.tool_use import main

if __name__ == "__main__":
    main()
