"""High-resolution sub-images (SPHINX): an image of grid x S pixels is seen by the S-pixel encoder as one
down-scaled global view plus grid x grid sub-images at full resolution.

The views, and so their tokens in the prompt's image slot, come in this fixed order:

    [global view] [sep] [sub-image row 0 col 0] [sep] [row 0 col 1] [sep] ... [row g-1 col g-1] [sep]

sub-images row by row, left to right; each view's M tokens are followed by one learned separator
embedding (`view_separator`, trained with the projector). An image then takes (1 + g*g) * (M + 1) tokens
of the text budget (`model.max_txt_len`); grid 1 is the plain model: M tokens, no separator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def views_per_image(grid: int) -> int:
    return 1 + grid * grid if grid > 1 else 1


def tokens_per_image(tokens_per_view: int, grid: int) -> int:
    """Image-slot length for one image: what the collator reserves and the text budget counts."""
    return tokens_per_view if grid == 1 else views_per_image(grid) * (tokens_per_view + 1)


def split_views(images: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, 3, g*S, g*S] -> [B * (1 + g*g), 3, S, S]: per image the global view (each g x g block of pixels
    averaged), then the sub-images row by row."""
    if grid < 2:
        raise ValueError(f"sub-images: a grid of {grid} has no sub-images (1 means the whole image as it is)")
    batch, channels, height, width = images.shape
    if height != width or height % grid:
        raise ValueError(f"sub-images: a {height}x{width} image does not split into a {grid}x{grid} grid of squares")
    size = height // grid
    global_view = F.avg_pool2d(images, kernel_size=grid)  # [B, 3, S, S]
    tiles = images.reshape(batch, channels, grid, size, grid, size).permute(0, 2, 4, 1, 3, 5)  # [B, g, g, 3, S, S]
    tiles = tiles.reshape(batch, grid * grid, channels, size, size)  # row-major: (0, 0), (0, 1), ...
    views = torch.cat([global_view.unsqueeze(1), tiles], dim=1)  # [B, 1 + g*g, 3, S, S]
    return views.reshape(batch * (1 + grid * grid), channels, size, size)


def join_views(view_embeds: torch.Tensor, grid: int, separator: torch.Tensor) -> torch.Tensor:
    """[B * (1 + g*g), M, D] in split_views' order -> [B, (1 + g*g) * (M + 1), D], a separator after each view."""
    views = views_per_image(grid)
    total, tokens, width = view_embeds.shape
    per_image = view_embeds.reshape(total // views, views, tokens, width)  # [B, V, M, D]
    separators = separator.to(view_embeds.dtype).expand(total // views, views, 1, width)  # [B, V, 1, D]
    return torch.cat([per_image, separators], dim=2).reshape(total // views, views * (tokens + 1), width)
