"""Draw a report's ``Plot`` objects to PNG files with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path


def render(plot, outdir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on build machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    try:
        if plot.kind == "bar":
            labels = list(plot.series)
            groups = plot.xticklabels or [str(x) for x in next(iter(plot.series.values()))[0]]
            width = 0.8 / max(len(labels), 1)
            for i, label in enumerate(labels):
                _, ys = plot.series[label]
                xs = [g + (i - (len(labels) - 1) / 2) * width for g in range(len(groups))]
                ax.bar(xs, ys, width, label=label)
            ax.set_xticks(range(len(groups)), groups)
        elif plot.kind == "line":
            styles = [("o", "-"), ("s", "--"), ("^", ":"), ("d", "-.")]
            for i, (label, (xs, ys)) in enumerate(plot.series.items()):
                marker, line = styles[i % len(styles)]
                ax.plot(xs, ys, marker=marker, markersize=4, linestyle=line, label=label)
            if plot.xticklabels:
                xs = next(iter(plot.series.values()))[0]
                ax.set_xticks(xs, plot.xticklabels, rotation=45, ha="right")
        else:
            raise ValueError(f"plot kind must be 'line' or 'bar', not {plot.kind!r}")
        for x, label in plot.vlines:
            ax.axvline(x, color="grey", linestyle="--", linewidth=1)
            ax.annotate(label, (x, 0.5), xycoords=("data", "axes fraction"),
                        textcoords="offset points", xytext=(4, 0), fontsize=8,
                        color="grey")
        if plot.logx:
            ax.set_xscale("log", base=2)
            if plot.xticklabels and plot.kind == "line":
                xs = next(iter(plot.series.values()))[0]
                ax.set_xticks(xs, plot.xticklabels, rotation=45, ha="right")
                ax.minorticks_off()
        if plot.logy:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(plot.title)
        ax.set_xlabel(plot.xlabel)
        ax.set_ylabel(plot.ylabel)
        ax.grid(True, alpha=0.3)
        if len(plot.series) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = outdir / plot.filename
        fig.savefig(path)
        return path
    finally:
        plt.close(fig)
