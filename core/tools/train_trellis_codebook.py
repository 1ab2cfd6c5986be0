"""Trains the 256-entry codebooks of Vspec's trellis formats TQ2, TQ3 and TQ4.

    python3 core/tools/train_trellis_codebook.py K      # K = 2, 3 or 4; needs numpy

prints the mean squared error on fresh N(0,1) data, the scale (UNIT in tqK.rs) and the i8 table
that core/src/quant/vspec/tqK.rs holds. Deterministic: the same numpy gives the same table.

The trellis (core/src/quant/vspec/trellis.rs): 8 state bits, K new bits per weight,
state_i = state_{i-1} >> K | b_i << (8 - K), the first state with its low 8 - K bits zero, 64
weights per block. Training is Lloyd's algorithm on trellis paths: Viterbi-encode blocks of
Gaussian samples with the current codebook, move each entry to the mean of the samples coded with
it, repeat. The start is the 256 Gaussian quantiles in a random order.
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


def main():
    k = int(sys.argv[1])
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
