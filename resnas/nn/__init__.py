"""Blocks, residual connections and the network builder."""

from resnas.nn.blocks import BLOCKS, ResidualBlock, register_block
from resnas.nn.network import ResidualNetwork, build

__all__ = ["BLOCKS", "ResidualBlock", "ResidualNetwork", "build", "register_block"]
