"""Configuration of experiment 'framework' per run profile (placeholder: the chapter author fills it)."""

CONFIGS = {'ci': {'dataset': 'digits', 'image_size': 8, 'seed': 0},
 'gpu': {'dataset': 'cifar10', 'image_size': 32, 'seed': 0},
 'paper': {'dataset': 'cifar10', 'image_size': 32, 'seed': 0}}
