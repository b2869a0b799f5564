"""Rendering of observation planes: RGB frames (for videos) and a readable text grid.

Drawing is generic over a task's planes: each plane name has a colour and a glyph in
``STYLE``; a new task's planes get a default style until it adds its own entry. ``unseen``
(``Task.unseen``: things in the level the agent does not see now) is drawn faded: at 40% of its
colour in a frame, its glyph followed by ``'`` in text.
"""

from __future__ import annotations

import functools

import numpy as np

STYLE: dict[str, tuple[tuple[int, int, int], str, str]] = {
    # plane: (RGB colour, text glyph, shape drawn in a tile)
    "wall": ((90, 90, 100), "#", "full"),
    "agent": ((250, 250, 250), "@", "circle"),
    "cheese": ((255, 205, 40), "c", "diamond"),
    "dish": ((70, 140, 255), "d", "ring"),
    "key": ((255, 215, 0), "k", "triangle"),
    "chest": ((150, 90, 40), "C", "square"),
    "held": ((0, 0, 0), "", "none"),
    "goal": ((40, 200, 70), "G", "square"),
    "lava": ((230, 70, 20), "~", "full"),
    "circle": ((255, 255, 255), "o", "circle"),
    "square": ((255, 255, 255), "s", "square"),
    "triangle": ((255, 255, 255), "^", "triangle"),
    "red": ((220, 40, 40), "r", "full"),
    "green": ((40, 180, 60), "g", "full"),
    "blue": ((50, 90, 230), "b", "full"),
    "target": ((40, 200, 70), "T", "diamond"),
    "leader": ((255, 140, 0), "L", "circle"),
    "trail": ((120, 80, 30), ".", "ring"),
    "apple": ((220, 30, 50), "a", "circle"),
    "shield": ((90, 170, 255), "S", "square"),
    "monster": ((170, 40, 200), "M", "triangle"),
}
_DEFAULT = ((200, 0, 200), "?", "square")
_COLOURS = ("red", "green", "blue")


@functools.cache
def _mask(shape: str, tile: int) -> np.ndarray:
    y, x = (np.mgrid[0:tile, 0:tile] + 0.5) / tile - 0.5
    if shape == "full":
        return np.ones((tile, tile), dtype=bool)
    if shape == "square":
        return (abs(x) < 0.32) & (abs(y) < 0.32)
    if shape == "circle":
        return x**2 + y**2 < 0.33**2
    if shape == "ring":
        return (x**2 + y**2 < 0.45**2) & (x**2 + y**2 > 0.33**2)
    if shape == "diamond":
        return abs(x) + abs(y) < 0.3
    if shape == "triangle":
        return (y > -0.35) & (y < 0.3) & (abs(x) < (y + 0.35) * 0.55)
    return np.zeros((tile, tile), dtype=bool)


def rgb(planes: np.ndarray, channels: tuple[str, ...], tile: int = 16,
        unseen: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(S*tile, S*tile, 3) uint8 frame of one env's (C, S, S) planes, and faded, ``unseen``
    cells (plane name -> (S, S) bool)."""
    c, s, _ = planes.shape
    img = np.zeros((s, s, tile, tile, 3), dtype=np.uint8)
    # colour planes fill a tile first; other planes draw their shape on top, the agent last;
    # a repeated plane (a salience copy) is drawn once
    first = [channels.index(ch) for ch in channels]
    order = [i for i in range(c) if channels[i] in _COLOURS]
    order += [i for i in range(c) if channels[i] not in _COLOURS and channels[i] != "agent"]
    order += [i for i in range(c) if channels[i] == "agent"]
    layers = [(channels[i], planes[i] > 0, 1.0) for i in order if first[i] == i]
    faded = [(name, np.asarray(cells, bool).reshape(s, s), 0.4) for name, cells in (unseen or {}).items()]
    for name, cells, strength in layers[:-1] + faded + layers[-1:]:  # the agent last
        colour, _, shape = STYLE.get(name, _DEFAULT)
        m = _mask(shape, tile)
        sub = img[cells]  # (n, tile, tile, 3)
        sub[:, m] = tuple(int(c * strength) for c in colour)
        img[cells] = sub
    return img.transpose(0, 2, 1, 3, 4).reshape(s * tile, s * tile, 3)


def _faded_glyph(name: str) -> str:
    """The text glyph of a plane's unseen cells: its own, then ``'``."""
    return STYLE.get(name, _DEFAULT)[1] + "'"


def legend(unseen: dict[str, np.ndarray] | None) -> str:
    """One line naming the faded glyphs that ``unseen`` draws (empty if it draws none)."""
    names = [name for name, cells in (unseen or {}).items() if np.asarray(cells).any()]
    return "  ".join(f"{_faded_glyph(n)} = {n}, not in the agent's view" for n in names)


def text(planes: np.ndarray, channels: tuple[str, ...], unseen: dict[str, np.ndarray] | None = None) -> str:
    """A text grid, two characters a cell: the glyphs of what lies there (``@`` the agent), then
    those of ``unseen`` things (plane name -> (S, S) bool) followed by ``'``."""
    c, s, _ = planes.shape
    glyphs = [STYLE.get(ch, _DEFAULT)[1] if channels.index(ch) == i else "" for i, ch in enumerate(channels)]
    hidden = [(_faded_glyph(name), np.asarray(cells, bool).reshape(s, s))
              for name, cells in (unseen or {}).items()]
    rows = []
    for y in range(s):
        cells = []
        for x in range(s):
            g = "".join(glyphs[i] for i in range(c) if planes[i, y, x])
            g += "".join(glyph for glyph, where in hidden if where[y, x])
            g = "##" if g.startswith("#") else g
            cells.append((g + "  ")[:2])
        rows.append("".join(cells).rstrip())
    return "\n".join(rows)
