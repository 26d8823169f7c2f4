"""The MTP drafter's network (net.py), its hand-written layers with backward passes (layers.py), the data it
learns from (data.py) and its training loop and command (train.py). The drafter itself: drafters/mtp.py."""
