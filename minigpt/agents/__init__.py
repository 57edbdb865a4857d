"""Visual tools and the agent that calls them: tools with JSON-Schema arguments, images by handle,
declarative templates, and a bounded planner loop."""
