"""Progress bars and byte counts for commands that can take a while."""
import sys


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, what):
        self.what = what
        self.on = sys.stderr.isatty()
        self.shown = False

    def __call__(self, done, total):
        if not self.on:
            return
        pct = 100 * done // total if total else 100
        bar = "#" * (pct // 4)
        sys.stderr.write(f"\r{self.what} [{bar:<25}] {pct:3d}%  {human_bytes(done)} of "
                         f"{human_bytes(total)}   ")
        sys.stderr.flush()
        self.shown = True

    def done(self):
        if self.shown:
            sys.stderr.write("\n")
