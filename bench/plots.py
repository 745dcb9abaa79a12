"""The long-reply benchmarks' one kind of plot: a cost against the reply's length."""

from __future__ import annotations

from pathlib import Path


def against_length(
    path: Path,
    lengths: list[int],
    series: list[tuple[str, str, list[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> None:
    """Write a PNG: each ``(label, style, values)`` of ``series`` against ``lengths``,
    both axes logarithmic, the lengths named on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, style, values in series:
        ax.plot(lengths, values, style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(lengths, [f"{c:,}" for c in lengths])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
