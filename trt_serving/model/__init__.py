"""The hasher network (ResNet trunk + hash head), default weights and generated images."""
