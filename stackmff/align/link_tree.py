"""The link tree: which layer each layer is registered to, and the reference, chosen from content only.

A minimum spanning tree over the valid layers' focus-profile distances (neighbours in focus are the most alike, so
their registration is the most precise); the reference is the tree's centre (the middle of the focus range: least
resampling, shortest chains). Invalid layers hang as leaves off their most similar valid layer. Any permutation of the
files gives the same tree.
"""

from __future__ import annotations

import numpy as np


def _link_tree(energy: np.ndarray, valid: list[int], reference: int | None) -> tuple[int, dict[int, int]]:
    """Reference layer and each other layer's parent, from content only (independent of the file order).

    Layers are compared by their focus profiles (log Laplacian energy per patch): neighbours in focus are the most
    alike, so their registration is the most precise. The valid layers are joined by a minimum spanning tree of
    that distance; the reference is its centre (smallest largest path to any valid layer), so chains are short and
    the reference sits in the middle of the focus range (the magnification that needs the least resampling). An
    invalid layer hangs as a leaf off its most similar valid layer, so no other layer is chained through it.
    """
    n = len(energy)
    logs = np.log(energy)
    dist = np.abs(logs[:, None, :] - logs[None, :, :]).mean(-1)  # (N, N)
    parent: dict[int, int] = {}
    # Prim's algorithm over the valid layers (ties broken by content distance, then index)
    in_tree = [valid[0]]
    edges: dict[int, list[tuple[int, float]]] = {k: [] for k in range(n)}
    while len(in_tree) < len(valid):
        best = None
        for a in in_tree:
            for b in valid:
                if b not in in_tree and (best is None or dist[a, b] < best[2]):
                    best = (a, b, dist[a, b])
        a, b, d = best
        in_tree.append(b)
        edges[a].append((b, d))
        edges[b].append((a, d))

    def farthest(src: int) -> float:
        seen, stack, far = {src}, [(src, 0.0)], 0.0
        while stack:
            u, du = stack.pop()
            far = max(far, du)
            for v, d in edges[u]:
                if v not in seen:
                    seen.add(v)
                    stack.append((v, du + d))
        return far

    if reference is None or reference not in valid:
        ecc = {k: farthest(k) for k in valid}
        root = min(valid, key=lambda k: (round(ecc[k], 9), float(dist[k, valid].sum()), k))
        if reference is not None:
            root = reference  # an invalid layer the user asked for: hang the tree off it anyway
    else:
        root = reference
    order = [root] if root in valid else []
    seen = set(order)
    if root not in valid:  # user-chosen invalid reference: its nearest valid layer links to it
        near = min(valid, key=lambda k: (dist[root, k], k))
        parent[near] = root
        order, seen = [near], {near, root}
    q = list(order)
    while q:
        u = q.pop(0)
        for v, _ in sorted(edges[u], key=lambda e: (e[1], e[0])):
            if v not in seen:
                seen.add(v)
                parent[v] = u
                q.append(v)
    for k in range(n):
        if k not in seen:
            parent[k] = min(valid, key=lambda j: (dist[k, j], j))
    return root, parent


def _bfs(parent: dict[int, int], root: int) -> list[tuple[int, int]]:
    """(layer, parent) pairs ordered so every parent comes before its children."""
    children: dict[int, list[int]] = {}
    for c, p in parent.items():
        children.setdefault(p, []).append(c)
    out, q = [], [root]
    while q:
        u = q.pop(0)
        for c in sorted(children.get(u, [])):
            out.append((c, u))
            q.append(c)
    return out
