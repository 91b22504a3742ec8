"""ipywidgets front-ends for the book's figures.

A widget here is a small ``VBox``: sliders, a one-line summary, and an ``Output`` that holds the
current figure as a PNG. The figure is drawn on a ``matplotlib.figure.Figure`` that pyplot does not
manage (so nothing is shown twice) and written into ``Output.outputs`` directly, which works with
or without a running kernel and is stored in the notebook's saved widget state.

    from mistral_nb.widgets import mask_explorer
    mask_explorer(window=4, seq_len=20, layers=3)       # the last expression of a cell
"""

from __future__ import annotations

import base64
import io

import ipywidgets as widgets
from matplotlib.figure import Figure

from ..masks import reachability, receptive_field, sliding_window_mask
from ..viz.masks import plot_mask, plot_reachability

__all__ = ["MaskExplorer", "mask_explorer", "figure_png"]


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (no timestamps or version metadata, so equal figures give equal bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


class MaskExplorer(widgets.VBox):
    """Sliders for window W, sequence length S and depth k; draws Mistral's one-layer mask and what
    can reach each position after k layers.

    Attributes: ``window``, ``seq_len``, ``layers`` (IntSliders), ``summary`` (HTML), ``output``
    (Output holding the PNG), ``figure`` (the matplotlib Figure of the last draw), ``state`` (a dict
    of the numbers the last draw shows).
    """

    def __init__(self, window: int = 4, seq_len: int = 20, layers: int = 3,
                 max_window: int = 16, max_seq_len: int = 48, max_layers: int = 8):
        style = {"description_width": "150px"}
        layout = widgets.Layout(width="420px")
        self.window = widgets.IntSlider(value=window, min=1, max=max_window, description="window W",
                                        style=style, layout=layout, continuous_update=False)
        self.seq_len = widgets.IntSlider(value=seq_len, min=2, max=max_seq_len, description="sequence length S",
                                         style=style, layout=layout, continuous_update=False)
        self.layers = widgets.IntSlider(value=layers, min=1, max=max_layers, description="layers k",
                                        style=style, layout=layout, continuous_update=False)
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self.state: dict = {}
        super().__init__(children=[self.window, self.seq_len, self.layers, self.summary, self.output])
        for slider in (self.window, self.seq_len, self.layers):
            slider.observe(self._on_change, names="value")
        self.update()

    def _on_change(self, change) -> None:
        self.update()

    def update(self) -> None:
        """Redraw for the sliders' current values."""
        W, S, k = self.window.value, self.seq_len.value, self.layers.value
        mask = sliding_window_mask(S, W)
        reach = reachability(S, W, k)
        last_reach = reach[-1]
        first = int(last_reach.nonzero()[0, 0])
        self.state = {"window": W, "seq_len": S, "layers": k,
                      "keys_of_last_query": int(mask[-1].sum()),
                      "first_reaching_last": first,
                      "receptive_field": receptive_field(k, W)}
        fig = Figure(figsize=(9.0, 4.4), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        plot_mask(mask, ax=ax1, highlight_row=S - 1,
                  title=f"one layer: the last query sees {self.state['keys_of_last_query']} keys")
        plot_reachability(reach, ax=ax2,
                          title=f"after {k} layer{'s' if k > 1 else ''}: positions {first}..{S - 1} reach the last")
        self.figure = fig
        png = base64.b64encode(figure_png(fig)).decode("ascii")
        self.output.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": {"image/png": png, "text/plain": "<mask and reachability figure>"}},)
        self.summary.value = (
            f"W = {W}, S = {S}, k = {k}: one layer reaches back W \u2212 1 = {W - 1} tokens; "
            f"k layers at most k \u00d7 (W \u2212 1) = {self.state['receptive_field']}; "
            f"here the last token can be influenced by positions {first} to {S - 1}.")


def mask_explorer(window: int = 4, seq_len: int = 20, layers: int = 3, **limits) -> MaskExplorer:
    """An interactive view of Mistral's sliding-window mask and its receptive field.

    ``limits``: ``max_window``, ``max_seq_len``, ``max_layers`` for the sliders.
    """
    return MaskExplorer(window=window, seq_len=seq_len, layers=layers, **limits)
