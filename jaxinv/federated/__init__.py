"""Federated learning as the attacker sees it: the gradient-sharing oracle (FedSGD
gradients or FedAvg updates per client) and the defenses a client applies before sharing.

Example:
    >>> from jaxinv import federated
    >>> sorted(federated.defenses.KINDS)
    ['dp', 'noise', 'none', 'prune']
"""

from jaxinv.federated import defenses
from jaxinv.federated.oracle import (
    check_update_tree,
    client_update,
    fedavg,
    finite_victims,
    shared_updates,
    soft_cross_entropy,
)

__all__ = ["check_update_tree", "client_update", "defenses", "fedavg", "finite_victims",
           "shared_updates", "soft_cross_entropy"]
