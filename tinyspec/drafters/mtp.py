"""MTP (multi-token prediction), the Gemma 4 way: a small drafter that reads the target's own state.

Gemma 4 ships an "assistant" drafter beside each model: it takes the embedding of the newest token with the
target's last hidden state, and its attention reads the target's KV cache instead of keeping one of its own.
tinyspec trains one for Gemma 3 270M from scratch in NumPy (`tinyspec train-mtp`, tinyspec/mtp/) and ships
it in weights/mtp-gemma-3-270m.drafter.safetensors. The network is in tinyspec/mtp/net.py; this file drives it:

    step 1   h = the target's hidden state that chose context[-1] (TargetView.hidden), x = context[-1]
    step i   (h, x) -> the drafter's guess of the next hidden state h' and logits over its vocabulary subset;
             choose d_i from them (argmax when greedy, else a draw from the warped q); then (h, x) = (h', d_i)

Every query reads only what the target's cache holds (the context but its last token): positions
0 .. L-1, within the sliding window for the sliding layer. The drafter allocates no cache and writes nothing
into the target's, so `rollback` has nothing to undo.

q is zero outside the subset (the drafter cannot propose those tokens), and is warped like the target's p:
the same temperature, top-k and top-p, applied to the subset's logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..mtp import net
from ..sampling import draw, warp
from .base import Drafter, Proposal

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "mtp-gemma-3-270m.drafter.safetensors"


def head_rows(E, vocab):  # [V, d] (float32, or a QuantTensor on the quant backend), [N] ids -> [N, d]
    """The rows of the tied embedding the head scores. On the quant backend E is the GGUF's Q8_0 blocks, and so
    are these rows: a quarter of the float32 bytes to read at every draft step, and the same values, which the
    backend's matmul multiplies bitwise as it would their float32 copy (tinyspec.quant.kernels)."""
    from ..quant.gguf_file import QuantTensor

    if isinstance(E, QuantTensor):
        raw = E.raw[vocab]  # [N, bytes per row], a copy of these rows' blocks
        raw.flags.writeable = False
        return QuantTensor(f"{E.name}[head rows]", E.format, (len(vocab),) + tuple(E.shape[1:]), raw)
    return np.ascontiguousarray(E[vocab])


class MTPDrafter(Drafter):
    name = "mtp"
    stream = 3  # its draws come from the run's seed's stream [seed, 3], independent of the verifier's

    def __init__(self, cfg: net.MTPConfig, params: dict, vocab, meta: dict | None = None, width: int = 4):
        self.cfg, self.params, self.meta = cfg, params, meta or {}
        self.width = width  # a tree's branching (propose_tree)
        self.vocab = np.asarray(vocab, dtype=np.int64)  # [N] full-vocabulary id of each head row
        self.vocab_size = cfg.vocab_size

    @classmethod
    def load(cls, path=None) -> "MTPDrafter":
        """The shipped drafter (weights/mtp-gemma-3-270m.drafter.safetensors), or one trained with `tinyspec train-mtp`."""
        return cls(*net.load(path or DEFAULT_WEIGHTS))

    def check(self, model):
        tcfg, c = model.cfg, self.cfg
        if tcfg.hidden_size != c.hidden_size or tcfg.vocab_size != c.vocab_size or \
                max(c.source_layers) >= tcfg.num_layers or tcfg.head_dim != c.head_dim:
            raise ValueError("this MTP drafter was trained for another target model (hidden size, vocabulary, "
                             "head dim or layer count differ): train one with `tinyspec train-mtp`")

    def begin(self, target, prompt, params):
        self.check(target.model)
        tcfg, c = target.model.cfg, self.cfg
        self.target, self.sampling = target, params
        self.random = target.random  # the run's source for the drafter's draws
        E = target.model.weights.embed_tokens  # [V, d]  the target's tied embedding
        self.E_sub = head_rows(E, self.vocab)  # [N, d]  the head's rows
        self.scale = np.float32(np.sqrt(tcfg.hidden_size))  # Gemma scales embeddings by sqrt(d)
        self.matmul = target.model.ops.matmul  # the target's backend: one row at a time, it beats a busy BLAS
        # c by bytes read per draft step (decoding is memory-bound): its parameters and the head's rows, against
        # the target's forward. A tree's step drafts a whole frontier for about this cost, so per node it is less.
        read = sum(v.nbytes for v in self.params.values()) + self.E_sub.nbytes
        self.cost = read / target.model.weight_bytes()

    def _choose(self, logits, position):  # [N] -> (token id, q [V] float64 or None)
        s = self.sampling
        if s.greedy:
            return int(self.vocab[int(np.argmax(logits))]), None
        q = np.zeros(self.cfg.vocab_size)  # [V]  zero mass outside the subset
        q[self.vocab] = warp(logits, s.temperature, s.top_k, s.top_p)  # the target's warping, on the subset
        return draw(q, s, self.random, position), q  # coupled: the noise the target uses at this position

    def propose(self, context, k):
        cache, c = self.target.cache, self.cfg
        L = cache.length  # == len(context) - 1: the cache holds every context token but the last
        kv = [(cache.k[layer][:L, 0], cache.v[layer][:L, 0]) for layer in c.source_layers]  # views, no copy
        h = np.asarray(self.target.hidden, dtype=np.float32)[None, :]  # [1, d]
        token = context[-1]
        tokens, qs = [], []
        for i in range(k):
            e = self.target.model.weights.embed_tokens[[token]] * self.scale  # [1, d]
            h, _ = net.step_forward(self.params, c, e, h, kv, [L + i], [L], self.matmul)  # [1, d]
            logits = net.head_forward(h, self.E_sub, self.matmul)[0]  # [N]
            token, q = self._choose(logits, position=L + 1 + i)  # d_{i+1} sits at position L + 1 + i
            tokens.append(token)
            qs.append(q)
        return Proposal(tokens=tokens, q=None if self.sampling.greedy else np.stack(qs))

    def propose_tree(self, context, budget, max_depth):
        """tree.best_first_tree over the head's vocabulary subset: one drafter step per depth for the whole
        frontier (each row carries its parent's predicted hidden state; every row reads only the target's cache,
        so the rows need no tree mask)."""
        from ..tree import best_first_tree, log_scores

        cache, c = self.target.cache, self.cfg
        L = cache.length  # == len(context) - 1
        kv = [(cache.k[layer][:L, 0], cache.v[layer][:L, 0]) for layer in c.source_layers]  # views, no copy
        E = self.target.model.weights.embed_tokens
        state = {}  # node -> its predicted hidden state (after its step)

        def step(tokens, h, depths):  # [F] tokens at depths -> ([F, d] states, [F, N] scores of the next token)
            e = E[tokens] * self.scale  # [F, d]
            positions, lengths = [L + d for d in depths], [L] * len(tokens)  # a node at depth d sits at L + d
            h, _ = net.step_forward(self.params, c, e, h, kv, positions, lengths, self.matmul)  # [F, d]
            return h, log_scores(net.head_forward(h, self.E_sub, self.matmul), self.sampling)

        def expand(tree, nodes):
            depths = tree.depths
            h = np.stack([state[tree.parents[n]] for n in nodes])  # [F, d] each parent's state
            h, scores = step([tree.tokens[n] for n in nodes], h, [depths[n] for n in nodes])
            state.update({n: h[j] for j, n in enumerate(nodes)})
            return scores

        h0, root = step([context[-1]], np.asarray(self.target.hidden, dtype=np.float32)[None, :], [0])
        state[-1] = h0[0]
        return best_first_tree(root[0], expand, budget, max_depth, self.width, ids=self.vocab)
