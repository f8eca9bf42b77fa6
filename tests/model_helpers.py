"""Helpers the model tests share."""

import torch


def switched_on(model: torch.nn.Module, running_stats: bool = False) -> torch.nn.Module:
    """Every BN a real per-channel map (the attention modules' zero-init output BN too), so the added
    path counts in the outputs; with running_stats, the running statistics are drawn as well."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                if running_stats:
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """The same state-dict keys holding exactly equal tensors."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
