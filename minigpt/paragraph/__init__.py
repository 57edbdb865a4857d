"""Image-to-paragraph: stages that read an image (the model's caption and regions, classical colour
segments), facts merged from them, a writer that turns the facts into a paragraph, and its picture.
`build.build_pipeline` puts a pipeline together for `minigpt paragraph` and for the gallery evaluation
(`evaluation.py`, the "paragraph" task of `minigpt eval`); `tool.py` is the writing step as an agent tool."""
