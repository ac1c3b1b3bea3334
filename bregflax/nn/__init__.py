"""The networks: shortcut maps, convolutions, BReG-Net and ResNet, losses, BN folding."""
