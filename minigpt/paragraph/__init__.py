"""Image-to-paragraph: stages that read an image (the model's caption and regions, classical colour
segments), facts merged from them, a writer that turns the facts into a paragraph, and its picture."""
