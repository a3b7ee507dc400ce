"""The fixed inputs of the golden chunker tests. Never change them: the golden cut points in
tests/golden/chunker_cuts.json were computed from exactly these bytes."""
import random

WORDS = ("trade blotter ledger account statement order execution settlement broker dealer "
         "customer margin confirm record retain audit examiner regulator custody cash "
         "security position journal memo email chat the of and to in for on at by").split()


def random_input():
    return random.Random(20261122).randbytes(8 << 20)


def text_input():
    rng = random.Random(42)
    out, size = [], 0
    while size < 4 << 20:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + "\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()
