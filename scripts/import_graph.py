"""Prints the import graph between scanner_core's layers, read from the source with ``ast``.

Every import counts (lazy in-function ones and ``TYPE_CHECKING`` ones too), seen through
the subpackages' lazy faces (``_EXPORTS``). A top-level module is a layer of its own.

    python scripts/import_graph.py            # one line per layer: what it imports
    python scripts/import_graph.py --edges    # one line per module-to-module edge across layers
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.import_graph import MODULES, dependencies, layer_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="list the module edges across layers")
    args = parser.parse_args()
    by_layer: dict[str, set[str]] = defaultdict(set)
    edges: list[str] = []
    for module in sorted(MODULES):
        source = layer_of(module)
        for dependency in sorted(dependencies(module)):
            target = layer_of(dependency)
            if target != source:
                by_layer[source].add(target)
                edges.append(f"{module} -> {dependency}")
    if args.edges:
        print("\n".join(edges))
        return
    for layer in sorted({layer_of(m) for m in MODULES}):
        print(f"{layer:16} -> {', '.join(sorted(by_layer[layer])) or '-'}")


if __name__ == "__main__":
    main()
