"""The networks trials and labellers train: the CIFAR ResNet18 classifier, its epoch order, the pseudo-labeller's loader."""
