"""Trains the 256-entry codebooks of Vspec's trellis formats TQ2, TQ3 and TQ4.

    python3 core/tools/train_trellis_codebook.py K      # K = 2, 3 or 4; needs numpy
    python3 core/tools/train_trellis_codebook.py K --additive

prints the mean squared error on fresh N(0,1) data, the scale (UNIT in tqK.rs) and the i8 table
that core/src/quant/vspec/tqK.rs holds. Deterministic: the same numpy gives the same table.

The trellis (core/src/quant/vspec/trellis.rs): 8 state bits, K new bits per weight,
state_i = state_{i-1} >> K | b_i << (8 - K), the first state with its low 8 - K bits zero, 64
weights per block. Training is Lloyd's algorithm on trellis paths: Viterbi-encode blocks of
Gaussian samples with the current codebook, move each entry to the mean of the samples coded with
it, repeat. The start is the 256 Gaussian quantiles in a random order.

`--additive` trains the experiment of docs/OPTIMIZATION.md ("A computed codebook"), not a shipped
table: entry s is A[s & 15] + B[s >> 4], two 16-entry tables that AVX2 reads with two `vpshufb`
instead of sixteen and a blend tree. Each Lloyd step is then a least-squares fit of the 32 entries
to the samples' means per state; the start is that fit to the shipped table of tqK.rs (a random
start ended 2-3 % worse). It prints the same line, then A and B in codebook units.
"""
import sys
import numpy as np

N, S = 64, 256

# seed, stages of (rounds, blocks per round), and whether each stage restarts the generator
# (TQ3's table was made in two runs, the second continuing from the first one's table).
SCHEDULE = {
    2: (9, [(30, 3000), (30, 6000)], False),
    3: (7, [(40, 3000), (40, 6000)], True),
    4: (11, [(30, 3000), (30, 6000)], False),
}


def viterbi(x, cb, k):
    groups = 1 << (8 - k)
    states = np.arange(S)
    b = x.shape[0]
    cost = np.where((states % groups)[None, :] == 0, (x[:, 0, None] - cb[None, :]) ** 2, 1e30)
    back = np.zeros((N, b, groups), dtype=np.int64)
    for i in range(1, N):
        grp = cost.reshape(b, groups, 1 << k)
        j = grp.argmin(axis=2)
        gmin = np.take_along_axis(grp, j[:, :, None], 2)[:, :, 0]
        back[i] = j
        cost = gmin[:, states % groups] + (x[:, i, None] - cb[None, :]) ** 2
    s = cost.argmin(axis=1)
    total = cost[np.arange(b), s]
    path = np.zeros((b, N), dtype=np.int64)
    for i in range(N - 1, -1, -1):
        path[:, i] = s
        if i > 0:
            g = s % groups
            s = (g << k) | back[i][np.arange(b), g]
    return path, total


def start(seed):
    rng = np.random.default_rng(seed)
    cb = np.quantile(rng.standard_normal(400000), (np.arange(S) + 0.5) / S)
    rng.shuffle(cb)
    return rng, cb


def shipped_table(k):
    """The shipped codebook of tq{k}.rs, in units of the Gaussian's standard deviation."""
    import os
    import re

    path = os.path.join(os.path.dirname(__file__), f"../src/quant/vspec/tq{k}.rs")
    src = open(path).read()
    unit = float(re.search(r"pub const UNIT: f32 = ([0-9.]+);", src).group(1))
    body = src.split("CODEBOOK: [i8; trellis::STATES] = [")[1].split("];")[0]
    return np.array([int(v) for v in body.replace("\n", " ").split(",") if v.strip()]) / unit


def additive(k):
    states = np.arange(S)
    # Design matrix: one-hot low nibble, then one-hot high nibble.
    phi = np.zeros((S, 32))
    phi[states, states & 15] = 1
    phi[states, 16 + (states >> 4)] = 1
    theta = np.linalg.lstsq(phi, shipped_table(k), rcond=None)[0]
    rng = np.random.default_rng(7)
    rng.standard_normal(32)  # the draw of a random start, kept: the measured tables came after it
    for rounds, blocks in [(30, 3000), (30, 6000), (15, 12000)]:
        for _ in range(rounds):
            x = rng.standard_normal((blocks, N))
            path, _ = viterbi(x, phi @ theta, k)
            count = np.bincount(path.ravel(), minlength=S).astype(float)
            sums = np.bincount(path.ravel(), weights=x.ravel(), minlength=S)
            gram = phi.T @ (count[:, None] * phi) + 1e-6 * np.eye(32)
            theta = np.linalg.solve(gram, phi.T @ sums)
    # Integer entries whose sums stay within ±127.
    scale = 127 / np.abs(phi @ theta).max()
    while np.abs(phi @ np.round(theta * scale)).max() > 127:
        scale *= 0.995
    ints = np.round(theta * scale)
    x = rng.standard_normal((3000, N))
    _, total = viterbi(x, (phi @ ints) / scale, k)
    print(f"TQ{k} additive: mse {total.sum() / x.size:.5f} unit {scale:.2f}")
    print("A", ",".join(str(int(v)) for v in ints[:16]))
    print("B", ",".join(str(int(v)) for v in ints[16:]))


def main():
    k = int(sys.argv[1])
    if "--additive" in sys.argv[2:]:
        return additive(k)
    seed, stages, restart = SCHEDULE[k]
    rng, cb = start(seed)
    for rounds, blocks in stages:
        if restart:
            rng, _ = start(seed)
        for _ in range(rounds):
            x = rng.standard_normal((blocks, N))
            path, _ = viterbi(x, cb, k)
            sums = np.bincount(path.ravel(), weights=x.ravel(), minlength=S)
            count = np.bincount(path.ravel(), minlength=S)
            cb = np.where(count > 0, sums / np.maximum(count, 1), cb)
    scale = 127 / np.abs(cb).max()
    table = np.clip(np.round(cb * scale), -127, 127)
    x = rng.standard_normal((3000, N))
    _, total = viterbi(x, table / scale, k)
    print(f"TQ{k}: mse {total.sum() / x.size:.5f} unit {scale:.2f}")
    print(",".join(str(int(v)) for v in table))


if __name__ == "__main__":
    main()
