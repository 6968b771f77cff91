"""Progress bars on a pool's map and imap (pip install 'poolx[progress]').

The bars go to stderr (tqdm's default); the results to stdout.
"""

import time

import poolx


def slow_square(x):
    time.sleep(0.005)
    return x * x


def check(x):
    if x % 25 == 0:
        raise ValueError(f"bad record {x}")
    return x


if __name__ == "__main__":
    with poolx.Pool(4) as pool:
        # A bar counting 200 items (not the 20 chunks they travel in).
        squares = pool.map(slow_square, range(200), chunksize=10, progress_bar=True)
        print("sum of squares:", sum(squares))

        # A generator has no len(): the bar counts up without a total...
        lines = (f"line {i}" for i in range(1000))
        lengths = pool.imap(len, lines, chunksize=50, progress_bar={"desc": "lines", "unit": "line"})
        print("characters:", sum(lengths))

        # ...and failed items show as failed=N; imap goes on after them.
        bad = 0
        results = pool.imap_unordered(check, range(100), progress_bar={"desc": "checks"})
        while True:
            try:
                next(results)
            except StopIteration:
                break
            except ValueError:
                bad += 1
        print("bad records:", bad)
