"""Flax NNX models of the experiments."""

from gapmmd_jax.models._dann_net import DomainAdaptationNet
from gapmmd_jax.models._gap_lenet import GapLeNet
from gapmmd_jax.models._vat_cnn import VatCNN
from gapmmd_jax.models._vat_mlp import VatMLP
from gapmmd_jax.models._vgg import IICNet, MineEncoder, VGGBackbone

__all__ = [
  "DomainAdaptationNet",
  "GapLeNet",
  "IICNet",
  "MineEncoder",
  "VGGBackbone",
  "VatCNN",
  "VatMLP",
]
